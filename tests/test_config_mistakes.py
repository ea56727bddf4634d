"""Config mistakes are one line and exit 2, naming the key (a real CLI subprocess)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from datahubsync.core.dburl import redact
from datahubsync.core.logsetup import RedactFilter
from tests.helpers import Hub, make_dataset, run_cli, write_yaml


def base(tmp: Path) -> dict[str, Any]:
    return {"state_dir": str(tmp / "state"), "hub": {"url": "http://127.0.0.1:9"},
            "datasets": [{"name": "a", "local_dir": str(tmp / "local" / "a")}]}


def mistake(tmp: Path, change: Any) -> dict[str, Any]:
    doc = base(tmp)
    change(doc, tmp)
    return doc


CASES = [
    ("log-file-is-a-dir", lambda d, t: (t.joinpath("logdir").mkdir(),
                                        d.update(logging={"file": str(t / "logdir")})),
     "logging.file", "is a directory"),
    ("state-dir-is-a-file", lambda d, t: (t.joinpath("f").write_text("x"),
                                          d.update(state_dir=str(t / "f"))),
     "state_dir", "not a directory"),
    ("state-dir-under-a-file", lambda d, t: (t.joinpath("f").write_text("x"),
                                             d.update(state_dir=str(t / "f" / "s"))),
     "state_dir", "cannot be created"),
    ("same-name", lambda d, t: d["datasets"].append({"name": "a", "local_dir": str(t / "b")}),
     "datasets.1.name", "also datasets.0"),
    ("same-local-dir", lambda d, t: d["datasets"].append(
        {"name": "b", "local_dir": str(t / "local" / "a")}),
     "datasets.1.local_dir", "overlaps datasets.0.local_dir"),
    ("nested-local-dir", lambda d, t: d["datasets"].append(
        {"name": "b", "local_dir": str(t / "local" / "a" / "sub")}),
     "datasets.1.local_dir", "overlaps"),
    ("root", lambda d, t: d["datasets"][0].update(local_dir="/"),
     "datasets.0.local_dir", "root of the filesystem"),
    ("state-inside-local-dir", lambda d, t: d.update(state_dir=str(t / "local" / "a" / "st")),
     "datasets.0.local_dir", "holds the state directory"),
]


@pytest.mark.parametrize(("change", "key", "why"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_mistake_is_one_line_exit_2_naming_the_key(tmp_path: Path, change: Any, key: str,
                                                   why: str) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", mistake(tmp_path, change))
    result = run_cli(["datasets", "status"], config=cfg, expect=2)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert f": {key}: " in lines[0] and why in lines[0], lines[0]


def test_env_override_nested_100000_deep_is_exit_2(tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", base(tmp_path))
    result = run_cli(["datasets", "status"], config=cfg, expect=2,
                     env={"DATAHUBSYNC_HUB__TIMEZONE": "[" * 100_000})
    assert "DATAHUBSYNC_HUB__TIMEZONE" in result.err and "nested too deeply" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_yaml_file_nested_too_deep_is_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("a: " + "[" * 100_000)
    result = run_cli(["datasets", "status"], config=cfg, expect=2)
    assert "c.yaml" in result.err and len(result.err.strip().splitlines()) == 1


@pytest.mark.parametrize("url", [
    "postgresql://app:hunter2@db/x", "postgresql://db/x?password=hunter2&sslmode=require",
    "https://hub/api?token=hunter2", "postgresql://db/x?sslmode=require&PASSWORD=hunter2"])
def test_password_in_a_url_is_masked(url: str) -> None:
    assert "hunter2" not in redact(url)
    record = logging.LogRecord("datahubsync", logging.INFO, __file__, 1, "connecting to %s",
                               (url,), None)
    RedactFilter().filter(record)
    assert "hunter2" not in record.getMessage() and "***" in record.getMessage()
    assert "sslmode=require" in redact(url) or "sslmode" not in url


def test_dataset_dir_symlinked_out_of_data_root_is_not_packaged(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "secret"
    make_dataset(outside, files=2)
    data = tmp_path / "data"
    make_dataset(data / "alpha", files=2)
    os.symlink(outside, data / "linked")
    hub = Hub(tmp_path, data).start()
    try:
        hub.wait_ready("alpha")
        entry = hub.datasets().get("linked")
        assert entry is None or not entry["package_ready"]
        assert "outside data_root" in hub.log.read_text()
    finally:
        hub.stop()
    allowed = Hub(tmp_path, data, dataset_links_outside=True).start()
    try:
        assert allowed.wait_ready("linked")["file_count"] == 2
    finally:
        allowed.stop()
