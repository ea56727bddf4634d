"""A full disk gives a clear error and loses nothing: real tmpfs mounts, real ENOSPC."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Hub, client_config, run_cli, tree_bytes


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[callable]:
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            if os.environ.get("CI") == "true":
                pytest.fail(f"cannot mount tmpfs under CI: {proc.stderr.strip()}")
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_no_room_for_download_is_refused_up_front(tmp_path: Path, hub: Hub, small_fs) -> None:
    hub.wait_ready("alpha")
    state = small_fs("state", "size=4k")
    cfg = client_config(tmp_path, hub.url, ["alpha"], state_dir=str(state / "s"))
    result = run_cli(["datasets", "sync", "--json"], config=cfg, expect=1)
    item = json.loads(result.out)["datasets"][0]
    assert item["status"] == "failed" and "not enough disk space" in item["message"]
    assert not (tmp_path / "local" / "alpha").exists()


def test_enospc_during_extraction_keeps_old_version(tmp_path: Path, hub: Hub, data_root: Path,
                                                   small_fs) -> None:
    first = hub.wait_ready("alpha")
    data_fs = small_fs("datafs", "size=64m,nr_inodes=64")
    cfg = client_config(tmp_path, hub.url, ["alpha"])
    text = cfg.read_text().replace(str(tmp_path / "local" / "alpha"), str(data_fs / "alpha"))
    cfg.write_text(text)
    run_cli(["datasets", "sync"], config=cfg)
    installed = tree_bytes(data_fs / "alpha")
    assert installed == tree_bytes(data_root / "alpha")
    # next trading day on the hub
    later = first["version"]
    for path in (data_root / "alpha").rglob("*.csv"):
        with open(path, "ab") as fh:
            fh.write(b"2026-11-24,1,2,3\r\n")
        os.utime(path, (os.path.getmtime(path) + 10,) * 2)
    hub.wait_ready("alpha", newer_than=later)
    # fill the inode table: bytes are free (so the pre-check passes), new files are not
    filler = data_fs / "filler"
    filler.mkdir()
    n = 0
    try:
        while True:
            (filler / f"{n}").touch()
            n += 1
    except OSError:
        pass
    for i in range(3):  # leave a few inodes: the staging dir is created, then ENOSPC
        (filler / f"{i}").unlink()
    result = run_cli(["datasets", "sync", "--json"], config=cfg, expect=1)
    item = json.loads(result.out)["datasets"][0]
    assert item["status"] == "failed"
    assert "No space left on device" in item["message"] or "ENOSPC" in item["message"]
    assert tree_bytes(data_fs / "alpha") == installed  # the old version, whole
    assert not [p for p in data_fs.iterdir() if ".dhs-new-" in p.name]  # staging cleaned
    state = json.loads((tmp_path / "clientstate" / ".last_sync.json").read_text())
    assert state["alpha"] == first["last_updated"]
    # room again: the next run installs the new version
    for path in filler.iterdir():
        path.unlink()
    run_cli(["datasets", "sync"], config=cfg)
    assert tree_bytes(data_fs / "alpha") == tree_bytes(data_root / "alpha")
