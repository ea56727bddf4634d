"""Shared fixtures: a hub with sample data, isolation from the real environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Hub, make_dataset
from tests.mysqlserver import mysql_table, mysql_url  # noqa: F401 - fixtures for every module
from tests.pgserver import pg_table, pg_url  # noqa: F401 - fixtures for every module
from tests.pictures_client_kit import task_table  # noqa: F401 - fixture
from tests.scripted_http import Make, scripted_servers


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real DATAHUBSYNC_* settings, no systemd socket, no home-dir state."""
    import os

    for key in list(os.environ):
        if key.startswith("DATAHUBSYNC_") and key != "DATAHUBSYNC_BIN":
            monkeypatch.delenv(key)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    make_dataset(root / "alpha", files=6, seed=1)
    make_dataset(root / "beta", files=3, seed=2)
    return root


@pytest.fixture
def hub(tmp_path: Path, data_root: Path) -> Iterator[Hub]:
    server = Hub(tmp_path, data_root).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def scripted() -> Iterator[Make]:
    """Scripted raw HTTP servers (tests.scripted_http), closed after the test."""
    with scripted_servers() as make:
        yield make
