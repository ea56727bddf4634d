"""Crash consistency of ``datahubsync.datasets.install`` with real process death.

A forked child runs ``install()`` with ``DATAHUBSYNC_CRASH_AT`` naming one
crash point, so it dies of SIGKILL at that exact step. Old tree A is installed first; the
child installs B (the package the real hub from ``conftest.hub`` serves).
After the child died, ``local_dir`` must be entirely A or entirely B; then a
real ``datahubsync datasets sync`` subprocess must end with exactly B, no
staging dirs, ``.last_sync.json`` equal to the hub's ``last_updated`` and A
kept for rollback.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import datahubsync.datasets.install as install_mod
from datahubsync.core.crashpoint import ENV
from datahubsync.datasets import client
from datahubsync.datasets.archive import ExtractLimits
from datahubsync.datasets.install import InstallRequest, install
from datahubsync.datasets.state import ClientState, InstalledVersion
from datahubsync.schema import load_config
from tests.crashkit import KILLED
from tests.helpers import Hub, client_config, make_dataset, run_cli, tree_bytes
from tests.legacy_hub import zip_tree

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

A_VERSION = "2026-01-05T15:00:00+08:00"  # older than anything the hub serves now
CRASH = KILLED
KILLED_AT = ["archive.member_extracted:2", "install.staged", "install.journal_written",
             "install.after_exchange", "install.fallback_renamed:1",
             "install.fallback_renamed:2", "install.overlay_file_moved:3", "install.recorded",
             "install.state_saved", "rollback.after_exchange"]


@dataclass
class Setup:
    tmp: Path
    hub: Hub
    entry: dict[str, Any]  # the hub's catalog entry for alpha (= tree B)
    tree_a: dict[str, bytes]
    tree_b: dict[str, bytes]
    package_b: Path
    mode: str
    config: Path

    @property
    def state_dir(self) -> Path:
        return self.tmp / "clientstate"

    @property
    def local_dir(self) -> Path:
        return self.tmp / "local" / "alpha"

    def request(self, package: Path, version: InstalledVersion) -> InstallRequest:
        return InstallRequest(name="alpha", package=package, local_dir=self.local_dir,
                              mode=self.mode, keep_previous=1, version=version,
                              limits=ExtractLimits(), fsync=False)

    def request_b(self) -> InstallRequest:
        return self.request(self.package_b, InstalledVersion(
            last_updated=self.entry["last_updated"], version=self.entry.get("version"),
            sha256=self.entry.get("sha256")))


def old_tree(tree_b: dict[str, bytes], *, extra: bool) -> dict[str, bytes]:
    """A: same paths as B with other bytes for most files (+ a file B lacks, if ``extra``)."""
    rels = sorted(tree_b)
    tree = {rel: b"OLD VERSION " + tree_b[rel][::-1] for rel in rels[:-2]}
    if extra:
        tree["sz/delisted-600999.csv"] = b"only in the old version\r\n"
    return tree


@pytest.fixture(scope="module")
def crash_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, Path]]:
    """One real hub (``datahubsync serve``) serving B for all crash tests: B never changes."""
    tmp = tmp_path_factory.mktemp("crash-hub")
    make_dataset(tmp / "data" / "alpha", files=6, seed=1)
    server = Hub(tmp, tmp / "data").start()
    try:
        yield server, tmp / "data"
    finally:
        server.stop()


def wait_published(hub: Hub, name: str, newer_than: str | None = None) -> dict[str, Any]:
    """Wait for a package, then until every hub worker publishes it (they poll the store
    every ``catalog_poll`` = 0.1 s; until then one may still answer "not ready"): six
    answers in a row (connections are spread over the workers) must agree."""
    entry = hub.wait_ready(name, newer_than=newer_than)
    deadline = time.monotonic() + 60
    agreeing = 0
    while agreeing < 6:
        assert time.monotonic() < deadline, "the hub's workers never agreed on the version"
        same = hub.datasets().get(name, {}).get("version") == entry["version"]
        agreeing = agreeing + 1 if same else 0
        if not same:
            time.sleep(0.05)
    return entry


def prepare(tmp: Path, crash_hub: tuple[Hub, Path], mode: str = "swap") -> Setup:
    """Tree A installed (through ``install``); B = the hub's package, downloaded."""
    hub, data_root = crash_hub
    entry = wait_published(hub, "alpha")
    tree_b = tree_bytes(data_root / "alpha")
    package_b = tmp / "B.zip"
    with urllib.request.urlopen(f"{hub.url}/package/alpha.zip", timeout=10) as response:
        package_b.write_bytes(response.read())
    # Overlay keeps files the package lacks, so its A has no extra file (final tree == B).
    tree_a = old_tree(tree_b, extra=mode == "swap")
    package_a = tmp / "A.zip"
    package_a.write_bytes(zip_tree(tree_a))
    config = client_config(tmp, hub.url, ["alpha"], datasets=[
        {"name": "alpha", "local_dir": str(tmp / "local" / "alpha"), "mode": mode}])
    setup = Setup(tmp, hub, entry, tree_a, tree_b, package_b, mode, config)
    install(ClientState(setup.state_dir), setup.request(package_a, InstalledVersion(A_VERSION)))
    assert tree_bytes(setup.local_dir) == tree_a
    return setup


def run_child(setup: Setup, point: str, patch: Callable[[], None] = lambda: None) -> int:
    """Fork; the child (patched) installs B armed to die at ``point``. Returns its status."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            patch()
            os.environ[ENV] = point
            install(ClientState(setup.state_dir), setup.request_b())
        except BaseException:  # noqa: BLE001 - report and die with a distinct status
            traceback.print_exc()
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def staging_dirs(setup: Setup) -> list[Path]:
    return sorted(setup.local_dir.parent.glob(".alpha.dhs-new-*"))


def assert_whole(setup: Setup, allowed: tuple[str, ...]) -> str:
    """local_dir is byte-for-byte A or B (or missing, if allowed); returns which."""
    if not setup.local_dir.exists():
        assert "missing" in allowed, "local_dir vanished"
        return "missing"
    found = tree_bytes(setup.local_dir)
    which = {"A": setup.tree_a, "B": setup.tree_b}
    for name, tree in which.items():
        if found == tree:
            assert name in allowed, f"local_dir is {name}, expected one of {allowed}"
            return name
    pytest.fail(f"local_dir is a mix of A and B: {sorted(found)}")


def assert_recovered(setup: Setup, expected_status: str) -> None:
    """A real sync (recovery first) ends with exactly B, recorded as the hub sent it."""
    result = run_cli(["datasets", "sync", "--json"], config=setup.config)
    (item,) = json.loads(result.out)["datasets"]
    assert item["status"] == expected_status, item
    assert tree_bytes(setup.local_dir) == setup.tree_b
    assert staging_dirs(setup) == []
    state = ClientState(setup.state_dir)
    assert json.loads(state.last_sync_path.read_text("utf-8")) == {
        "alpha": setup.entry["last_updated"]}
    assert not state.journal_path("alpha").exists()
    record = state.record("alpha")
    assert record.current is not None
    assert record.current.last_updated == setup.entry["last_updated"]
    # The old version is kept, intact, for rollback.
    assert [p.last_updated for p in record.previous] == [A_VERSION]
    assert tree_bytes(Path(record.previous[0].path or "/nonexistent")) == setup.tree_a


# -- the crash points ---------------------------------------------------------------------------

def no_exchange() -> None:
    """Make the install fall back to two renames (as where renameat2 is missing)."""
    install_mod.exchange = lambda a, b: False  # type: ignore[assignment]


def test_crash_during_extraction(tmp_path: Path, crash_hub: tuple[Hub, Path]) -> None:
    setup = prepare(tmp_path, crash_hub)
    assert run_child(setup, "archive.member_extracted:2") == CRASH
    assert assert_whole(setup, ("A",)) == "A"
    assert not ClientState(setup.state_dir).journal_path("alpha").exists()
    (half,) = staging_dirs(setup)  # the dead run's half-extracted tree...
    assert len(tree_bytes(half)) == 2 < len(setup.tree_b)
    assert_recovered(setup, "installed")  # ...is removed by the next install


def test_crash_with_tree_staged_before_journal(tmp_path: Path,
                                               crash_hub: tuple[Hub, Path]) -> None:
    setup = prepare(tmp_path, crash_hub)
    assert run_child(setup, "install.staged") == CRASH
    assert not ClientState(setup.state_dir).journal_path("alpha").exists()
    assert assert_whole(setup, ("A",)) == "A"
    assert len(staging_dirs(setup)) == 1
    assert_recovered(setup, "installed")


def test_crash_after_journal_before_swap(tmp_path: Path, crash_hub: tuple[Hub, Path]) -> None:
    setup = prepare(tmp_path, crash_hub)
    assert run_child(setup, "install.journal_written") == CRASH
    assert ClientState(setup.state_dir).journal_path("alpha").exists()
    assert assert_whole(setup, ("A",)) == "A"
    assert_recovered(setup, "up_to_date")


def test_crash_right_after_exchange(tmp_path: Path, crash_hub: tuple[Hub, Path]) -> None:
    setup = prepare(tmp_path, crash_hub)
    status = run_child(setup, "install.after_exchange")
    # renameat2 unsupported here would end the install without the point: proves nothing
    assert status == CRASH, f"exit {status}: is RENAME_EXCHANGE supported on {tmp_path}?"
    assert assert_whole(setup, ("B",)) == "B"
    assert_recovered(setup, "up_to_date")


@pytest.mark.parametrize("point", ["install.fallback_renamed:1", "install.fallback_renamed:2"],
                         ids=["between-renames", "after-both"])
def test_crash_in_two_rename_fallback(tmp_path: Path, crash_hub: tuple[Hub, Path],
                                      point: str) -> None:
    setup = prepare(tmp_path, crash_hub)
    assert run_child(setup, point, no_exchange) == CRASH
    # Between the two renames local_dir is briefly missing (never a mix); the journal
    # lets the next run finish the move.
    expected = ("missing",) if point.endswith(":1") else ("B",)
    assert assert_whole(setup, expected) == expected[0]
    assert_recovered(setup, "up_to_date")


def test_crash_in_overlay_after_some_files(tmp_path: Path,
                                           crash_hub: tuple[Hub, Path]) -> None:
    setup = prepare(tmp_path, crash_hub, mode="overlay")
    assert len(setup.tree_b) >= 5
    assert run_child(setup, "install.overlay_file_moved:3") == CRASH
    # Overlay moves file by file (by design, not atomic for readers): every file is whole,
    # A's or B's version, and the journal is there to finish the job.
    found = tree_bytes(setup.local_dir)
    assert set(found) <= set(setup.tree_a) | set(setup.tree_b)
    for rel, data in found.items():
        assert data in (setup.tree_a.get(rel), setup.tree_b.get(rel)), rel
    moved = sum(found.get(rel) == data for rel, data in setup.tree_b.items())
    assert moved == 3  # died mid-way: three files moved, the rest still A's
    assert ClientState(setup.state_dir).journal_path("alpha").exists()
    assert_recovered(setup, "up_to_date")


@pytest.mark.parametrize("point", ["install.recorded", "install.state_saved"])
def test_crash_after_recording_before_journal_removed(
        tmp_path: Path, crash_hub: tuple[Hub, Path], point: str) -> None:
    setup = prepare(tmp_path, crash_hub)
    assert run_child(setup, point) == CRASH
    assert ClientState(setup.state_dir).journal_path("alpha").exists()
    assert assert_whole(setup, ("B",)) == "B"
    assert_recovered(setup, "up_to_date")


def test_crash_during_rollback_leaves_consistent_state(
        tmp_path: Path, crash_hub: tuple[Hub, Path]) -> None:
    setup = prepare(tmp_path, crash_hub)
    install(ClientState(setup.state_dir), setup.request_b())
    assert tree_bytes(setup.local_dir) == setup.tree_b
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.environ[ENV] = "rollback.after_exchange"
        try:
            install_mod.rollback(ClientState(setup.state_dir), "alpha", setup.local_dir, "swap")
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == CRASH
    assert_whole(setup, ("A", "B"))
    # Whatever the next sync decides, what is on disk must be what the state says.
    result = run_cli(["datasets", "sync", "--json"], config=setup.config)
    (item,) = json.loads(result.out)["datasets"]
    recorded = json.loads(ClientState(setup.state_dir).last_sync_path.read_text())["alpha"]
    on_disk = assert_whole(setup, ("A", "B"))
    assert (on_disk, recorded) in {("A", A_VERSION), ("B", setup.entry["last_updated"])}, item


# -- rollback -----------------------------------------------------------------------------------

def _new_hub_version(hub: Hub, data_root: Path, seed: int, previous: dict[str, Any]
                     ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Rewrite every file of alpha (a new trading day) and wait for the new package."""
    make_dataset(data_root / "alpha", files=6, seed=1, rows=20 + seed)
    entry = wait_published(hub, "alpha", newer_than=previous["version"])
    assert entry["last_updated"] != previous["last_updated"]
    return entry, tree_bytes(data_root / "alpha")


def _sync(config: Path, *args: str) -> dict[str, Any]:
    result = run_cli(["datasets", "sync", "--json", *args], config=config)
    (item,) = json.loads(result.out)["datasets"]
    return item


def test_rollback_restores_previous_and_sync_skips_until_newer(
        tmp_path: Path, hub: Hub, data_root: Path) -> None:
    config = client_config(tmp_path, hub.url, ["alpha"])
    local_dir = tmp_path / "local" / "alpha"
    last_sync = tmp_path / "clientstate" / ".last_sync.json"

    e1 = wait_published(hub, "alpha")
    tree1 = tree_bytes(data_root / "alpha")
    statuses = client.sync(load_config(config, environ={}), client.SyncOptions())
    assert [r.status for r in statuses] == ["installed"]
    e2, tree2 = _new_hub_version(hub, data_root, 1, e1)
    assert tree2 != tree1
    assert _sync(config)["status"] == "installed"
    assert tree_bytes(local_dir) == tree2

    result = run_cli(["datasets", "rollback", "alpha", "--json"], config=config)
    assert json.loads(result.out)["skip_last_updated"] == e2["last_updated"]
    assert tree_bytes(local_dir) == tree1
    assert json.loads(last_sync.read_text()) == {"alpha": e1["last_updated"]}

    # The hub still offers version 2: not reinstalled.
    item = _sync(config)
    assert item["status"] == "skipped", item
    assert tree_bytes(local_dir) == tree1
    assert json.loads(last_sync.read_text()) == {"alpha": e1["last_updated"]}

    # --force reinstalls it.
    assert _sync(config, "--force")["status"] == "installed"
    assert tree_bytes(local_dir) == tree2
    assert json.loads(last_sync.read_text()) == {"alpha": e2["last_updated"]}

    # Roll back again, then the hub offers a newer version 3: installed without --force.
    run_cli(["datasets", "rollback", "alpha"], config=config)
    assert tree_bytes(local_dir) == tree1
    e3, tree3 = _new_hub_version(hub, data_root, 2, e2)
    item = _sync(config)
    assert item["status"] == "installed", item
    assert tree_bytes(local_dir) == tree3
    assert json.loads(last_sync.read_text()) == {"alpha": e3["last_updated"]}
    assert not list(local_dir.parent.glob(".alpha.dhs-new-*"))
