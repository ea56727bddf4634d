"""End to end: ``datasets sync`` through a real TCP proxy that cuts, throttles and counts.

A real hub (``datahubsync serve``) publishes one dataset whose package is a few MB
(stored, ``compress_level: 0``, so it is larger than the client's 1 MiB read
size); the client's ``hub.url`` points at ``tests.proxy.Proxy`` in front of it.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.crashkit import killed_at
from tests.helpers import (
    Hub,
    Result,
    clean_env,
    cli_argv,
    client_config,
    make_dataset,
    run_cli,
    tree_bytes,
)
from tests.proxy import Proxy

FILES, ROWS = 40, 3000  # stored (compress_level 0): a package of about 3.8 MB
MAX_TIME = 2.0



@dataclass
class Env:
    tmp: Path  # this test's directory: client config, state and local copy
    name: str
    root: Path  # the hub's data_root (shared by the module's tests)
    hub: Hub
    proxy: Proxy
    entry: dict[str, Any]  # the hub's catalog entry for ``name``

    @property
    def src(self) -> Path:
        return self.root / self.name

    @property
    def local(self) -> Path:
        return self.tmp / "local" / self.name

    @property
    def state(self) -> Path:
        return self.tmp / "clientstate"

    @property
    def part(self) -> Path:
        return self.state / "downloads" / f"{self.name}.zip.part"

    @property
    def part_meta(self) -> Path:
        return self.part.with_name(self.part.name + ".json")

    @property
    def size(self) -> int:
        return int(self.entry["package_size"])

    def config(self, retries: int) -> Path:
        return client_config(self.tmp, self.proxy.url, [self.name], hub={"retries": retries})

    def last_sync(self) -> dict[str, str]:
        path = self.state / ".last_sync.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def own_dataset(self, name: str) -> Env:
        """This environment for a new dataset of its own (for tests that change the data)."""
        staged = self.tmp / f"staged-{name}"  # renamed in whole: see replace_data
        make_dataset(staged, files=FILES, rows=ROWS)
        staged.rename(self.root / name)
        return Env(self.tmp, name, self.root, self.hub, self.proxy, self.hub.wait_ready(name))

    def replace_data(self, seed: int) -> dict[str, bytes]:
        """New content for every file; returns the new tree once the hub published it.

        The new tree is written aside and renamed into place: with ``debounce: 0`` the
        hub would otherwise package a half-written directory.
        """
        old_version = self.entry["version"]
        staged, old = self.tmp / "staged", self.tmp / "old-data"
        make_dataset(staged, files=FILES, rows=ROWS, seed=seed)
        self.src.rename(old)
        staged.rename(self.src)
        shutil.rmtree(old)
        self.entry = self.hub.wait_ready(self.name, newer_than=old_version)
        assert self.entry["file_count"] == FILES, self.entry
        return tree_bytes(self.src)


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, Path]]:
    """One hub for the module; ``big`` is never changed, tests that change data add their own."""
    tmp = tmp_path_factory.mktemp("hub")
    root = tmp / "hubdata"
    make_dataset(root / "big", files=FILES, rows=ROWS)
    hub = Hub(tmp, root, compress_level=0).start()
    try:
        entry = hub.wait_ready("big")
        assert entry["package_size"] > 3 * 1024 * 1024, entry  # several client reads long
        yield hub, root
    finally:
        hub.stop()


@pytest.fixture
def env(tmp_path: Path, shared_hub: tuple[Hub, Path]) -> Iterator[Env]:
    hub, root = shared_hub
    proxy = Proxy(hub.url)
    try:
        yield Env(tmp_path, "big", root, hub, proxy, hub.wait_ready("big"))
    finally:
        proxy.close()


def sync(env: Env, *, retries: int, expect: int, args: tuple[str, ...] = ()
         ) -> tuple[Result, dict[str, Any]]:
    result = run_cli(["datasets", "sync", "--json", *args], config=env.config(retries),
                     expect=expect, timeout=60)
    document = result.json()
    assert document["message_type"] == "summary"
    (item,) = document["datasets"]
    assert item["name"] == env.name
    return result, item


def resumed_ranges(env: Env) -> list[int]:
    """Start offsets of the ranged package requests that went through the proxy."""
    found = []
    name = env.name
    for head in env.proxy.requests:
        if head.startswith(f"GET /package/{name}.zip "):
            match = re.search(r"(?im)^range:\s*bytes=(\d+)-", head)
            if match:
                found.append(int(match.group(1)))
    return found


def start_sync(env: Env, *args: str, retries: int = 3, **popen: Any) -> subprocess.Popen[str]:
    argv = cli_argv() + ["--config", str(env.config(retries)), "datasets", "sync", "--json",
                         *args]
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(argv, env=clean_env(), text=True, **popen)


def part_size(env: Env) -> int:
    return env.part.stat().st_size if env.part.exists() else 0


def assert_not_installed(env: Env) -> None:
    assert not env.local.exists()
    if env.local.parent.exists():
        assert not list(env.local.parent.glob(f".{env.name}.dhs-*"))
    assert env.name not in env.last_sync()


CUT_POINTS = pytest.mark.parametrize("where", [
    pytest.param("late", id="cut-at-65pct"),
    pytest.param("early", id="cut-at-100KB"),
])


def cut_point(env: Env, where: str) -> int:
    """Bytes after which the proxy cuts the package: late in it, or at 100 KB."""
    return int(env.size * 0.65) if where == "late" else 100_000


# 1 -----------------------------------------------------------------------------------------

@CUT_POINTS
def test_cut_mid_package_resumes_within_one_run(env: Env, where: str) -> None:
    cut_after = cut_point(env, where)
    env.proxy.cut_after, env.proxy.max_cuts = cut_after, 1

    _, item = sync(env, retries=3, expect=0)

    assert item["status"] == "installed", item
    assert env.proxy.cuts == 1
    assert tree_bytes(env.local) == tree_bytes(env.src)
    assert item["bytes_downloaded"] == env.size  # every byte written once
    assert not env.part.exists() and not env.part_meta.exists()
    ranges = resumed_ranges(env)
    assert len(ranges) == 1 and ranges[0] > 0, env.proxy.requests
    # Resumed, not restarted: a restart after the cut would carry cut_after + size bytes.
    assert env.proxy.bytes_down < 1.5 * env.size
    assert env.proxy.bytes_down <= cut_after + (env.size - ranges[0]) + 8192


# 2 -----------------------------------------------------------------------------------------

@CUT_POINTS
def test_cut_then_resume_in_a_later_run(env: Env, where: str) -> None:
    cut_after = cut_point(env, where)
    env.proxy.cut_after, env.proxy.max_cuts = cut_after, 1

    _, item = sync(env, retries=1, expect=1)
    assert item["status"] == "failed" and item["message"].startswith(f"{env.name}:"), item
    assert_not_installed(env)
    assert env.part.exists() and env.part_meta.exists()
    kept = part_size(env)
    assert 0 < kept <= cut_after

    env.proxy.reset_counters()
    env.proxy.cut_after = None
    _, item = sync(env, retries=1, expect=0)
    assert item["status"] == "installed", item
    assert item["resumed_from"] == kept
    assert item["bytes_downloaded"] == env.size - kept
    assert resumed_ranges(env) == [kept]
    assert env.proxy.bytes_down < env.size - kept + 8192
    assert tree_bytes(env.local) == tree_bytes(env.src)
    assert env.last_sync()[env.name] == env.entry["last_updated"]
    assert not env.part.exists()


# 3 -----------------------------------------------------------------------------------------

def test_package_replaced_between_attempts_restarts_from_zero(env: Env) -> None:
    env = env.own_dataset("replaced")
    old = dict(env.entry)
    env.proxy.cut_after, env.proxy.max_cuts = int(env.size * 0.65), 1
    sync(env, retries=1, expect=1)
    assert part_size(env) > 0  # old package bytes that must not be reused

    new_tree = env.replace_data(seed=7)
    assert env.entry["sha256"] != old["sha256"]
    env.proxy.reset_counters()
    env.proxy.cut_after = None

    _, item = sync(env, retries=1, expect=0)

    assert item["status"] == "installed", item
    assert item["resumed_from"] == 0
    assert item["bytes_downloaded"] == env.entry["package_size"]
    assert resumed_ranges(env) == []  # no byte of the old package asked for or kept
    assert tree_bytes(env.local) == new_tree
    assert env.last_sync()[env.name] == env.entry["last_updated"] != old["last_updated"]


# 4 -----------------------------------------------------------------------------------------

KILLED_AT = ["download.chunk_written:3", "download.chunk_written:30", "download.verified"]


@pytest.mark.parametrize("point", KILLED_AT)
def test_kill_9_during_download_then_resume(env: Env, point: str) -> None:
    env.proxy.rate = 2_000_000  # small reads: many chunks
    killed_at(point, ["datasets", "sync"], config=env.config(3), timeout=60)
    kept = part_size(env)
    assert kept > 0
    if point == "download.verified":
        assert kept == env.size
    else:
        assert kept < env.size
    assert_not_installed(env)

    env.proxy.rate = None
    _, item = sync(env, retries=1, expect=0)
    assert item["status"] == "installed", item
    assert item["resumed_from"] == kept
    assert item["bytes_downloaded"] == env.size - kept
    assert tree_bytes(env.local) == tree_bytes(env.src)
    assert not env.part.exists()


# 5 -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [
    pytest.param(500_000, id="500KBps"),
    pytest.param(100_000, id="100KBps"),
])
def test_max_time_gives_up_in_time(env: Env, rate: int) -> None:
    env.proxy.rate = rate
    assert env.size / rate > 5  # the download alone would need more than 5 s
    proc = start_sync(env, "--max-time", str(MAX_TIME), stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=120)  # a bound for a hung test, not a measure
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"--max-time {MAX_TIME}: still running after 120 s "
                    f"({env.proxy.bytes_down} bytes through the proxy)")
    assert proc.returncode == 1, err
    (item,) = json.loads(out)["datasets"]
    assert item["status"] == "failed"
    assert "deadline" in item["message"] and "kept for the next run" in item["message"], item
    assert "Traceback" not in err
    assert_not_installed(env)
    assert env.proxy.bytes_down < env.size  # gave up before the download could finish


# 6 -----------------------------------------------------------------------------------------

def test_hub_unreachable_exits_75_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    config = client_config(tmp_path, url, ["big"], hub={"retries": 1, "connect_timeout": 2})

    result = run_cli(["datasets", "sync"], config=config, expect=75, timeout=30)

    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("datahubsync: error: ")
    assert url in lines[0] and "unreachable" in lines[0]
    assert "Traceback" not in result.err + result.out
    assert not (tmp_path / "local" / "big").exists()


# 7 -----------------------------------------------------------------------------------------

def test_every_connection_cut_fails_and_keeps_installed_version(env: Env) -> None:
    env = env.own_dataset("cutall")
    sync(env, retries=1, expect=0)
    installed = tree_bytes(env.local)
    assert installed == tree_bytes(env.src)
    last_sync = (env.state / ".last_sync.json").read_bytes()
    record = (env.state / "datasets" / f"{env.name}.json").read_bytes()

    env.replace_data(seed=3)
    env.proxy.reset_counters()
    env.proxy.cut_after, env.proxy.max_cuts = 1_500_000, None

    result, item = sync(env, retries=2, expect=1)

    assert env.proxy.cuts == 2  # both attempts were cut
    assert item["status"] == "failed"
    message = item["message"]
    assert message.startswith(f"{env.name}: network: ") and "\n" not in message, message
    assert re.search(r"connection|reset|broken", message, re.I), message
    assert "Traceback" not in result.err
    assert tree_bytes(env.local) == installed
    assert not list(env.local.parent.glob(f".{env.name}.dhs-new-*"))
    assert (env.state / ".last_sync.json").read_bytes() == last_sync
    assert (env.state / "datasets" / f"{env.name}.json").read_bytes() == record
