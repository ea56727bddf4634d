"""Smoke tests of the frozen binary itself (dist/datahubsync), not the virtualenv."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.batchkit import batch_config, create_table, day_counts, glob_job, write_day
from tests.frozen import frozen_binary
from tests.helpers import Hub, client_config, run_cli, tree_bytes


@pytest.fixture(scope="module")
def binary() -> Path:
    return frozen_binary()


@pytest.fixture
def frozen(binary: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every run_cli / Hub in the test starts the frozen binary."""
    monkeypatch.setenv("DATAHUBSYNC_BIN", str(binary))
    return binary


def run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60)


def test_version_and_every_group_help(binary: Path) -> None:
    started = time.monotonic()
    version = run(binary, "--version")
    assert version.returncode == 0 and "0." in version.stdout
    assert time.monotonic() - started < 5  # figures are in bench/, this only catches hangs
    top = run(binary, "--help")
    assert top.returncode == 0
    block = top.stdout.split("Commands:")[1].split("\n\n")[0]
    commands = re.findall(r"^  (\w[\w-]*)\s", block, re.M)
    assert {"batch", "datasets", "doctor", "serve", "version"} <= set(commands)
    for command in commands:
        result = run(binary, command, "--help")
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage:" in result.stdout


def test_every_database_driver_is_in_the_build(binary: Path) -> None:
    result = run(binary, "--json", "version", "--verbose")
    assert result.returncode == 0, result.stdout + result.stderr
    info = json.loads(result.stdout)
    assert info["frozen"] is True
    assert all(info["packages"].values()), info["packages"]
    drivers = info["drivers"]
    assert all(d["ok"] for d in drivers.values()), drivers
    assert drivers["oracle"]["thin_mode"] is True  # no Instant Client needed
    assert "FETCH FIRST 5 ROWS ONLY" in drivers["oracle"]["sql"]
    assert drivers["postgresql"]["implementation"] == "binary"


def test_serve_then_sync_end_to_end(frozen: Path, tmp_path: Path, data_root: Path) -> None:
    hub = Hub(tmp_path, data_root).start()
    try:
        hub.wait_ready("alpha")
        cfg = client_config(tmp_path, hub.url, ["alpha", "beta"])
        run_cli(["datasets", "sync"], config=cfg)
        for name in ("alpha", "beta"):
            assert tree_bytes(tmp_path / "local" / name) == tree_bytes(data_root / name)
        doctor = run_cli(["--json", "doctor", "--min-free", "1"], config=cfg).json()
        assert doctor["ok"], doctor
    finally:
        hub.stop()


def test_batch_copy_into_postgresql(frozen: Path, tmp_path: Path, pg_url: str,
                                    pg_table: str) -> None:
    create_table(pg_url, pg_table)
    write_day(tmp_path / "csv", "2025-10-06", rows=5)
    config = batch_config(tmp_path, {"bars": glob_job(pg_url, pg_table, tmp_path / "csv")})
    run_cli(["batch", "run", "--from", "2025-10-06", "--to", "2025-10-06"], config=config)
    assert day_counts(pg_url, pg_table) == {"2025-10-06": 5}


def test_pictures_from_a_mariadb_task_table(frozen: Path, tmp_path: Path, mysql_url: str,
                                            mysql_table: str) -> None:
    """The frozen build loads the MySQL dialect by URL, the SQLite ledger, and serves /files."""
    from tests.pictures_client_kit import (
        check_mirror,
        create_task_table,
        insert_tasks,
        make_pictures,
        pictures_config,
        start_server,
    )

    pics = make_pictures(tmp_path / "srv", 3, missing=1)
    create_task_table(mysql_url, mysql_table)
    insert_tasks(mysql_url, mysql_table, pics.tasks)
    server = start_server(tmp_path, pics.root)
    try:
        config = pictures_config(tmp_path, server.url, mysql_url, mysql_table)
        result = run_cli(["--json", "pictures", "once"], config=config).json()
        assert result["downloaded"] == 23 and result["missing"] == 1
        assert check_mirror(pics, tmp_path / "mirror") == []
    finally:
        server.stop()
