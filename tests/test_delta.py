"""Delta sync end to end: a real `serve`, the real CLI, real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.crashkit import killed_at
from tests.helpers import (
    Hub,
    client_config,
    make_dataset,
    run_cli,
    tree_bytes,
    wait_until,
    write_yaml,
)
from tests.test_sync_e2e import _StaticServer, _touch_all

ROW = b"2026-11-24,10.01,10.02,1234\r\n"


def sync(cfg: Path, expect: int = 0) -> dict[str, Any]:
    result = run_cli(["datasets", "sync", "--json"], config=cfg, expect=expect)
    return {d["name"]: d for d in json.loads(result.out)["datasets"]}


def next_version(hub: Hub, name: str, previous: str, with_deltas: int = 1) -> dict[str, Any]:
    """Wait for a new package of ``name`` that offers ``with_deltas`` deltas."""

    def published() -> dict[str, Any] | None:
        entry = hub.datasets().get(name)
        if entry and entry["version"] != previous and len(entry["deltas"]) >= with_deltas:
            return entry
        return None

    return wait_until(published, f"a new version of {name}", timeout=30,
                      detail=lambda: hub.log.read_text()[-3000:])


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    data = tmp_path / "data"
    make_dataset(data / "alpha", files=30, rows=200, seed=3)
    hub = Hub(tmp_path, data, debounce=0.5).start()  # build once every file has its new row
    entry = hub.wait_ready("alpha")
    cfg = client_config(tmp_path, hub.url, ["alpha"])
    first = sync(cfg)["alpha"]
    assert first["method"] == "full"
    yield hub, data / "alpha", tmp_path / "local" / "alpha", cfg, entry
    hub.stop()


def test_appended_rows_travel_as_a_small_delta(setup: Any) -> None:
    hub, data, local, cfg, v1 = setup
    _touch_all(data, ROW)
    v2 = next_version(hub, "alpha", v1["version"])
    assert v2["deltas"][0]["from"] == v1["version"]
    result = sync(cfg)["alpha"]
    assert result["status"] == "installed" and result["method"] == "delta"
    assert (result["files_appended"], result["files_added"], result["files_changed"],
            result["files_deleted"]) == (30, 0, 0, 0)
    assert result["bytes_downloaded"] == v2["deltas"][0]["size"]
    assert result["bytes_downloaded"] < v2["package_size"] / 5
    assert tree_bytes(local) == tree_bytes(data)
    assert sync(cfg)["alpha"]["status"] == "up_to_date"
    # the delta resumes like a package: Range gives 206
    partial = requests.get(f"{hub.url}/{v2['deltas'][0]['path']}",
                           headers={"Range": "bytes=10-"}, timeout=10)
    assert partial.status_code == 206 and len(partial.content) == v2["deltas"][0]["size"] - 10
    # the previous version is kept for rollback, whole and unmodified
    rolled = run_cli(["datasets", "rollback", "alpha", "--json"], config=cfg).json()
    assert rolled["last_updated"] == v1["last_updated"]
    assert all(not b.endswith(ROW) for b in tree_bytes(local).values())


def test_rewritten_added_and_deleted_files(setup: Any) -> None:
    hub, data, local, cfg, v1 = setup
    files = sorted(data.rglob("*.csv"))
    middle = bytearray(files[0].read_bytes())
    middle[40:44] = b"9999"  # a correction in the middle: not an append
    files[0].write_bytes(bytes(middle))
    files[1].unlink()
    (data / "sz" / "new.csv").write_bytes(b"a,b\r\n1,2\r\n")
    _touch_all(data, ROW)  # and a new row everywhere, which makes it a new version
    next_version(hub, "alpha", v1["version"])
    result = sync(cfg)["alpha"]
    assert result["method"] == "delta"
    assert (result["files_added"], result["files_changed"], result["files_deleted"]) == (1, 1, 1)
    assert result["files_appended"] == 28
    assert tree_bytes(local) == tree_bytes(data)


def _inodes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_ino for p in root.rglob("*.csv")}


def _kept_tree(local: Path) -> Path:
    kept = list(local.parent.glob(f".{local.name}.dhs-prev-*"))
    assert len(kept) == 1, kept
    return kept[0]


def test_daily_deltas_recycle_the_obsolete_versions_files(setup: Any) -> None:
    """With keep_previous 1, day 3's files are day 1's, extended: no copy of the dataset."""
    hub, data, local, cfg, v1 = setup
    day1 = _inodes(local)
    _touch_all(data, ROW)
    v2 = next_version(hub, "alpha", v1["version"])
    assert sync(cfg)["alpha"]["method"] == "delta"
    assert _inodes(_kept_tree(local)) == day1  # day 1 is the rollback point now
    day2 = tree_bytes(local)
    _touch_all(data, ROW)
    next_version(hub, "alpha", v2["version"])
    result = sync(cfg)["alpha"]
    assert result["method"] == "delta" and result["files_appended"] == 30
    assert tree_bytes(local) == tree_bytes(data)
    assert _inodes(local) == day1  # the obsolete day-1 files, brought up to date
    assert tree_bytes(_kept_tree(local)) == day2  # and day 2 kept whole for rollback
    assert not list(local.parent.glob(f".{local.name}.dhs-new-*"))


def test_a_recycled_file_that_is_no_prefix_is_rebuilt(setup: Any) -> None:
    """An obsolete copy that was edited (same size, other bytes) fails the sha256 check:
    that file is built the plain way and the result is still the hub's."""
    hub, data, local, cfg, v1 = setup
    _touch_all(data, ROW)
    v2 = next_version(hub, "alpha", v1["version"])
    sync(cfg)
    kept = _kept_tree(local)
    edited = sorted(kept.rglob("*.csv"))[0]
    body = bytearray(edited.read_bytes())
    body[5:9] = b"XXXX"
    edited.write_bytes(bytes(body))
    _touch_all(data, ROW)
    next_version(hub, "alpha", v2["version"])
    result = sync(cfg)["alpha"]
    assert result["method"] == "delta" and result["status"] == "installed"
    assert tree_bytes(local) == tree_bytes(data)  # a delta still, and right


def test_two_versions_behind_uses_the_direct_delta_or_falls_back(setup: Any,
                                                                tmp_path: Path) -> None:
    hub, data, local, cfg, v1 = setup
    _touch_all(data, ROW)
    v2 = next_version(hub, "alpha", v1["version"])
    _touch_all(data, ROW)
    v3 = next_version(hub, "alpha", v2["version"], with_deltas=2)
    assert {d["from"] for d in v3["deltas"]} == {v1["version"], v2["version"]}
    result = sync(cfg)["alpha"]
    assert result["method"] == "delta" and result["files_appended"] == 30
    assert tree_bytes(local) == tree_bytes(data)

    # A client whose version has no delta (keep_deltas 1 on a second hub) gets the package.
    other = tmp_path / "other"
    make_dataset(other / "data" / "beta", files=10, rows=300)
    hub2 = Hub(other, other / "data", keep_deltas=1).start()
    try:
        b1 = hub2.wait_ready("beta")
        cfg2 = client_config(other, hub2.url, ["beta"])
        sync(cfg2)
        _touch_all(other / "data" / "beta", ROW)
        b2 = next_version(hub2, "beta", b1["version"])
        _touch_all(other / "data" / "beta", ROW)
        b3 = next_version(hub2, "beta", b2["version"])
        assert [d["from"] for d in b3["deltas"]] == [b2["version"]]
        result = sync(cfg2)["beta"]
        assert result["method"] == "full" and result["delta_fallback"] == ""
        assert tree_bytes(other / "local" / "beta") == tree_bytes(other / "data" / "beta")
    finally:
        hub2.stop()


def test_a_delta_too_large_for_the_client_is_not_used(setup: Any, tmp_path: Path) -> None:
    hub, data, local, cfg, v1 = setup
    _touch_all(data, ROW)
    v2 = next_version(hub, "alpha", v1["version"])
    strict = client_config(tmp_path, hub.url, ["alpha"], sync={"delta_max_share": 0.01})
    result = sync(strict)["alpha"]
    assert result["method"] == "full" and result["bytes_downloaded"] == v2["package_size"]
    assert "delta_max_share" in result["delta_fallback"]
    assert tree_bytes(local) == tree_bytes(data)


def test_corrupted_delta_falls_back_to_the_full_package(setup: Any, tmp_path: Path) -> None:
    hub, data, local, cfg, v1 = setup
    _touch_all(data, ROW)
    v2 = next_version(hub, "alpha", v1["version"])
    [delta_zip] = (tmp_path / "hubstate" / "packages").glob("alpha_*.delta.zip")
    raw = bytearray(delta_zip.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    delta_zip.write_bytes(bytes(raw))
    result = sync(cfg)["alpha"]
    assert result["method"] == "full"
    assert "sha256" in result["delta_fallback"]
    assert result["bytes_downloaded"] == v2["package_size"]
    assert tree_bytes(local) == tree_bytes(data)


def test_hand_edited_local_file_is_detected(setup: Any, tmp_path: Path) -> None:
    hub, data, local, cfg, v1 = setup
    victim = sorted(local.rglob("*.csv"))[3]
    edited = bytearray(victim.read_bytes())
    edited[-3] = ord("7") if edited[-3] != ord("7") else ord("8")  # same size, new content
    victim.write_bytes(bytes(edited))
    _touch_all(data, ROW)
    next_version(hub, "alpha", v1["version"])

    refuse = client_config(tmp_path, hub.url, ["alpha"], sync={"on_local_change": "refuse"})
    failed = sync(refuse, expect=1)["alpha"]
    assert failed["status"] == "failed"
    assert victim.relative_to(local).as_posix() in failed["message"]
    assert "refuse" in failed["message"]
    assert victim.read_bytes() == bytes(edited)  # nothing touched

    repair = client_config(tmp_path, hub.url, ["alpha"])
    result = sync(repair)["alpha"]
    assert result["method"] == "full"
    assert "differ from the installed version" in result["delta_fallback"]
    assert tree_bytes(local) == tree_bytes(data)


# In the order a delta install reaches them: a kill before the swap leaves the old tree
# and the next run starts over (and reaches the next point); a kill after it leaves the
# new tree and the next run's recovery passes the points that record it.
DELTA_POINTS = ["download.chunk_written:1", "download.verified", "delta.adopted",
                "archive.checked", "delta.file_built:1", "delta.file_built:300",
                "install.staged", "install.journal_written", "install.after_exchange",
                "install.recorded", "install.state_saved"]
KILLED_AT = DELTA_POINTS


@pytest.mark.parametrize("adopting", [False, True], ids=["fresh-tree", "adopted-tree"])
def test_kill_9_while_applying_leaves_old_or_new(tmp_path: Path, adopting: bool) -> None:
    """Killed at each named point of a delta install, the dataset is the old or the new version.

    ``adopted-tree``: a version is kept already, so the install rebuilds that
    obsolete tree in place of a fresh one (the daily steady state).
    """
    data = tmp_path / "data"
    make_dataset(data / "alpha", files=600, rows=50, seed=5)
    # debounce: appending to 600 files takes a while, and a package built half-way
    # through would be a version unlike both snapshots the test compares against
    hub = Hub(tmp_path, data, debounce=1.0).start()
    try:
        v1 = hub.wait_ready("alpha")
        cfg = client_config(tmp_path, hub.url, ["alpha"])
        sync(cfg)
        local = tmp_path / "local" / "alpha"
        if adopting:
            _touch_all(data / "alpha", ROW)
            v1 = next_version(hub, "alpha", v1["version"])
            assert sync(cfg)["alpha"]["method"] == "delta"
        old = tree_bytes(local)
        _touch_all(data / "alpha", ROW)
        next_version(hub, "alpha", v1["version"])
        new = tree_bytes(data / "alpha")
        points = [p for p in DELTA_POINTS if adopting or p != "delta.adopted"]
        swapped = False
        for point in points:
            killed_at(point, ["datasets", "sync"], config=cfg)
            swapped = swapped or point == "install.after_exchange"
            siblings = [p.name for p in local.parent.glob(".alpha.dhs-*")]
            now = tree_bytes(local)
            expected = new if swapped else old
            if now != expected:
                keys = set(now) | set(new) | set(old)
                raise AssertionError(
                    f"after a kill at {point}: {len(now)} files (old {len(old)}, new "
                    f"{len(new)}); unlike new: "
                    f"{sorted(k for k in keys if now.get(k) != new.get(k))[:10]}; unlike old: "
                    f"{sorted(k for k in keys if now.get(k) != old.get(k))[:10]}; "
                    f"siblings {siblings}")
        result = sync(cfg)["alpha"]
        assert result["status"] == "up_to_date"
        assert tree_bytes(local) == new
        assert not list(local.parent.glob(".alpha.dhs-new-*"))
        assert not list(local.parent.glob(".alpha.dhs-delta-*"))
    finally:
        hub.stop()


def test_static_tree_serves_deltas_too(tmp_path: Path) -> None:
    data_root = tmp_path / "pubdata"
    make_dataset(data_root / "alpha", files=12, rows=300)
    hub_cfg = write_yaml(tmp_path / "pub.yaml", {"serve": {"data_root": str(data_root)},
                                                 "state_dir": str(tmp_path / "pubstate")})
    out = tmp_path / "site"
    run_cli(["datasets", "publish", "--out", str(out)], config=hub_cfg)
    server = _StaticServer(out)
    try:
        cfg = client_config(tmp_path, server.url, ["alpha"])
        assert sync(cfg)["alpha"]["method"] == "full"
        _touch_all(data_root / "alpha", ROW)
        run_cli(["datasets", "publish", "--out", str(out)], config=hub_cfg)
        assert len(list((out / "delta" / "alpha").glob("*.zip"))) == 1
        result = sync(cfg)["alpha"]
        assert result["method"] == "delta" and result["files_appended"] == 12
        assert tree_bytes(tmp_path / "local" / "alpha") == tree_bytes(data_root / "alpha")
    finally:
        server.stop()
