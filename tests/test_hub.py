"""The hub (`datahubsync serve`) as a real subprocess: contract, Range/ETag, freshness, signals."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import time
import zipfile
from pathlib import Path

import pytest
import requests

from datahubsync.datasets.freshness import decide, signature
from datahubsync.datasets.hub import Builder, BuildSettings
from datahubsync.datasets.packager import scan_dataset
from datahubsync.datasets.store import PackageStore
from tests.helpers import Hub, free_port, http_answers, make_dataset, tree_bytes, wait_until


def test_health_and_datasets_contract(hub: Hub, data_root: Path) -> None:
    assert requests.get(f"{hub.url}/health", timeout=5).json() == {"status": "ok"}
    entry = hub.wait_ready("alpha")
    doc = requests.get(f"{hub.url}/api/datasets", timeout=5).json()
    assert "generated_at" in doc
    for key, kind in [("name", str), ("last_updated", str), ("file_count", int),
                      ("total_size", int), ("package_ready", bool), ("package_size", int),
                      ("sha256", str), ("etag", str), ("version", str)]:
        assert isinstance(entry[key], kind), key
    assert entry["file_count"] == 6
    assert entry["total_size"] == sum(len(b) for b in tree_bytes(data_root / "alpha").values())
    # local time with an offset, never naive and never "Z"
    assert entry["last_updated"][-6] in "+-" and entry["last_updated"][-3] == ":"


def test_package_download_matches_announcement(hub: Hub, data_root: Path) -> None:
    entry = hub.wait_ready("alpha")
    response = requests.get(f"{hub.url}/package/alpha.zip", timeout=5)
    assert response.status_code == 200
    body = response.content
    assert len(body) == entry["package_size"]
    assert hashlib.sha256(body).hexdigest() == entry["sha256"]
    assert response.headers["ETag"] == f'"{entry["etag"]}"'
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert {i.filename for i in zf.infolist()} == set(tree_bytes(data_root / "alpha"))
        assert all(not i.is_dir() for i in zf.infolist())
        chinese = [i for i in zf.infolist() if not i.filename.isascii()]
        assert chinese and all(i.flag_bits & 0x800 for i in chinese)


def test_range_if_range_head_and_416(hub: Hub) -> None:
    entry = hub.wait_ready("alpha")
    url, size = f"{hub.url}/package/alpha.zip", entry["package_size"]
    full = requests.get(url, timeout=5).content
    part = requests.get(url, headers={"Range": "bytes=10-"}, timeout=5)
    assert part.status_code == 206 and part.content == full[10:]
    assert part.headers["Content-Range"] == f"bytes 10-{size - 1}/{size}"
    middle = requests.get(url, headers={"Range": "bytes=5-9"}, timeout=5)
    assert middle.status_code == 206 and middle.content == full[5:10]
    good = requests.get(url, headers={"Range": "bytes=10-", "If-Range": f'"{entry["etag"]}"'},
                        timeout=5)
    assert good.status_code == 206
    stale = requests.get(url, headers={"Range": "bytes=10-", "If-Range": '"0-0"'}, timeout=5)
    assert stale.status_code == 200 and stale.content == full
    past = requests.get(url, headers={"Range": f"bytes={size + 5}-"}, timeout=5)
    assert past.status_code == 416
    head = requests.head(url, timeout=5)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == size
    assert head.headers["ETag"] and head.headers["Last-Modified"]
    not_modified = requests.get(url, headers={"If-None-Match": f'"{entry["etag"]}"'}, timeout=5)
    assert not_modified.status_code == 304


@pytest.mark.parametrize("name", ["nope.zip", "alpha", "..%2Falpha.zip", "%2e%2e.zip",
                                  "orphan.zip", "alpha_20990101_000000.zip"])
def test_unknown_packages_are_404_json(hub: Hub, name: str) -> None:
    hub.wait_ready("alpha")
    cache = hub.tmp / "hubstate" / "packages"
    (cache / "orphan.zip").write_bytes(b"PK not published")  # on disk, not in the catalog
    response = requests.get(f"{hub.url}/package/{name}", timeout=5)
    assert response.status_code == 404
    assert response.json() == {"error": "Package not found"}


def test_traversal_outside_routes_is_not_served(hub: Hub) -> None:
    for path in ["/package/../hub.yaml", "/package/%2e%2e/%2e%2e/etc/passwd",
                 "/../../etc/passwd"]:
        response = requests.get(f"{hub.url}{path}", timeout=5)
        assert response.status_code == 404 and "root:" not in response.text


def test_metrics_count_builds_requests_and_bytes(hub: Hub) -> None:
    entry = hub.wait_ready("alpha")
    requests.get(f"{hub.url}/package/alpha.zip", timeout=5)
    requests.get(f"{hub.url}/package/missing.zip", timeout=5)
    wanted = [
        'datahubsync_packages_built_total{dataset="alpha"} 1',
        'datahubsync_package_build_seconds_total{dataset="alpha"}',
        'datahubsync_http_requests_total{route="/package/{filename}",status="404"} 1',
        'datahubsync_http_requests_total{route="/package/{filename}",status="200"} 1',
    ]
    text = ""

    def complete() -> bool:
        nonlocal text
        text = requests.get(f"{hub.url}/metrics", timeout=5).text
        return all(w in text for w in wanted)

    # every worker writes its counters every 0.5 s (core.metrics)
    wait_until(complete, "every counter in /metrics", timeout=30, interval=0.1, fail=False)
    for w in wanted:
        assert w in text
    served = [line for line in text.splitlines()
              if line.startswith('datahubsync_http_response_bytes_total{route="/package/')]
    assert served and float(served[0].split()[-1]) >= entry["package_size"]


def test_workers_share_the_port_and_the_packages(tmp_path: Path, data_root: Path) -> None:
    server = Hub(tmp_path, data_root, workers=3).start()
    try:
        entry = server.wait_ready("alpha")
        assert len(_child_pids(server.proc.pid)) == 2  # type: ignore[union-attr]
        for _ in range(30):  # fresh connection each time: the kernel spreads them
            response = requests.get(f"{server.url}/package/alpha.zip",
                                    headers={"Connection": "close"}, timeout=5)
            assert response.status_code == 200
            assert hashlib.sha256(response.content).hexdigest() == entry["sha256"]
    finally:
        assert server.stop() == 0


def _child_pids(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_rebuild_only_when_enough_files_changed(tmp_path: Path, data_root: Path) -> None:
    two_days_ago = time.time() - 2 * 86400  # yesterday's update, outside the fresh window
    for path in data_root.rglob("*.csv"):
        os.utime(path, (two_days_ago, two_days_ago))
    hub = Hub(tmp_path, data_root).start()
    try:
        first = hub.wait_ready("alpha")
        time.sleep(0.6)  # several check intervals: nothing changed, nothing rebuilt
        assert hub.datasets()["alpha"]["version"] == first["version"]
        files = sorted((data_root / "alpha").rglob("*.csv"))
        later = time.time()
        os.utime(files[0], (later, later))  # 1 of 6 changed: below the 85 % rule
        time.sleep(0.6)
        assert hub.datasets()["alpha"]["version"] == first["version"]
        for path in files:  # a new trading day: every file gets a row
            with open(path, "ab") as fh:
                fh.write(b"2026-11-24,1,2,3\r\n")
            os.utime(path, (later + 1, later + 1))
        second = hub.wait_ready("alpha", newer_than=first["version"])
        assert second["last_updated"] > first["last_updated"]
        assert second["sha256"] != first["sha256"]
        # the previous package stays on disk for clients still downloading it
        cache = hub.tmp / "hubstate" / "packages"
        assert len(list(cache.glob("alpha_*.zip"))) == 2
    finally:
        hub.stop()


def test_update_packaged_half_way_is_completed(tmp_path: Path) -> None:
    """A package built mid-update (hub restart, writer pause) is rebuilt when the rest lands."""
    data = tmp_path / "data"
    make_dataset(data / "d", files=10)
    now = [time.time()]
    old = int((now[0] - 3 * 86400) * 1e9)
    files = sorted((data / "d").rglob("*.csv"))
    for path in files:
        os.utime(path, ns=(old, old))
    store = PackageStore(tmp_path / "cache")
    settings = BuildSettings(data, None, 0, 0.85, 2, 1, 1, __import__("datetime").UTC)
    builder = Builder(settings, store, wall_clock=lambda: now[0])
    assert builder.run_once()["d"].build  # yesterday's data
    stamp = int(now[0] * 1e9)
    for path in files[:3]:  # today's update starts...
        os.utime(path, ns=(stamp, stamp))
    assert builder.run_once(force=True)["d"].build  # ...and gets packaged half-way
    for path in files[3:]:  # the other 70 %: below 85 % "newer than the package"
        os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    decision = builder.run_once()["d"]
    assert decision.build, decision.reason
    assert "fresh window" in decision.reason
    off = BuildSettings(data, None, 0, 0.85, 2, 1, 1, __import__("datetime").UTC,
                        fresh_window=None)
    later = stamp + 2 * 10**9
    os.utime(files[0], ns=(later, later))
    assert not Builder(off, store, wall_clock=lambda: now[0]).run_once()["d"].build


def test_keep_packages_prunes_old(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_dataset(data / "d", files=2)
    store = PackageStore(tmp_path / "cache")
    settings = BuildSettings(data, None, 0, 0.0, 1, 1, 1, __import__("datetime").UTC)
    builder = Builder(settings, store, wall_clock=iter(range(10**9, 10**9 + 100)).__next__)
    for round_ in range(4):
        for path in (data / "d").rglob("*.csv"):
            path.write_bytes(path.read_bytes() + b"x")
            os.utime(path, ns=(10**18 + round_, 10**18 + round_))
        builder.run_once()
    assert len(store.records("d")) == 2  # current + keep_packages (1)
    assert len(list((tmp_path / "cache").glob("d_*.zip"))) == 2


def test_debounce_waits_for_quiet(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_dataset(data / "d", files=3)
    now = [1000.0]
    store = PackageStore(tmp_path / "cache")
    settings = BuildSettings(data, None, 60, 0.5, 2, 1, 1, __import__("datetime").UTC)
    builder = Builder(settings, store, clock=lambda: now[0])
    assert builder.run_once()["d"].build  # first package: at once
    for path in (data / "d").rglob("*.csv"):
        path.write_bytes(path.read_bytes() + b"1")
    assert builder.run_once()["d"].reason.startswith("debouncing")
    now[0] += 30
    for path in (data / "d").rglob("*.csv"):  # still changing: the wait starts again
        path.write_bytes(path.read_bytes() + b"2")
    assert builder.run_once()["d"].reason.startswith("debouncing")
    now[0] += 59
    assert builder.run_once()["d"].reason.startswith("debouncing")
    now[0] += 2
    assert builder.run_once()["d"].build
    assert len(store.records("d")) == 2


def test_freshness_rule_unit() -> None:
    class E:
        def __init__(self, rel: str, mtime: int) -> None:
            self.relpath, self.size, self.mtime_ns = rel, 1, mtime

    old = [E(f"f{i}", 100) for i in range(20)]
    sig = signature(old)
    assert not decide(old, sig, 100, 0.85).build
    assert decide(old, None, None, 0.85).build
    some = [E(f"f{i}", 200 if i < 16 else 100) for i in range(20)]  # 80 %
    assert not decide(some, sig, 100, 0.85).build
    assert decide(some, sig, 100, 0.85, force=True).build
    most = [E(f"f{i}", 200 if i < 17 else 100) for i in range(20)]  # 85 %
    assert decide(most, sig, 100, 0.85).build
    assert not decide([], None, None, 0.85).build


def test_ready_notification_and_sigterm_exit_0(tmp_path: Path, data_root: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(20)
        server = Hub(tmp_path, data_root).start(env={"NOTIFY_SOCKET": str(sock_path)})
        assert sock.recv(100) == b"READY=1"
        assert server.stop(signal.SIGTERM) == 0
        messages = []
        sock.settimeout(0.5)
        try:
            while True:
                messages.append(sock.recv(200))
        except TimeoutError:
            pass
        assert b"STOPPING=1" in messages


def test_sigterm_lets_inflight_download_finish(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "big").mkdir(parents=True)
    (data / "big" / "noise.bin").write_bytes(os.urandom(48 * 1024 * 1024))
    server = Hub(tmp_path, data, compress_level=0).start()
    entry = server.wait_ready("big")
    received = bytearray()
    with requests.get(f"{server.url}/package/big.zip", stream=True, timeout=10) as response:
        chunks = response.iter_content(64 * 1024)
        received += next(chunks)
        server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        # the listening socket closes first: new connections are refused
        wait_until(lambda: not http_answers(f"{server.url}/health", timeout=2),
                   "new connections to be refused after SIGTERM", timeout=60)
        for chunk in chunks:
            received += chunk
    assert len(received) == entry["package_size"]
    assert hashlib.sha256(received).hexdigest() == entry["sha256"]
    assert server.proc.wait(20) == 0  # type: ignore[union-attr]


def test_scan_ignores_symlinks_and_temp_names(tmp_path: Path) -> None:
    root = tmp_path / "d"
    make_dataset(root, files=2)
    (root / "link.csv").symlink_to("/etc/passwd")
    (root / ".dhs-tmp").write_text("x")
    names = {e.relpath for e in scan_dataset(root)}
    assert "link.csv" not in names and ".dhs-tmp" not in names and len(names) == 2


def test_requests_answered_while_a_package_builds(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "heavy").mkdir(parents=True)
    for i in range(8):  # incompressible data at level 9: a build of a few seconds
        (data / "heavy" / f"{i}.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    server = Hub(tmp_path, data, compress_level=9, compress_threads=1, workers=1).start()
    try:
        slowest = 0.0
        saw_building = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            started = time.monotonic()
            entry = server.datasets()["heavy"]
            requests.get(f"{server.url}/health", timeout=5)
            slowest = max(slowest, time.monotonic() - started)
            if entry["package_ready"]:
                break
            saw_building = True
            time.sleep(0.05)
        assert saw_building, "the build finished before we could observe it"
        assert slowest < 0.5
    finally:
        server.stop()


def test_configured_dataset_list_limits_what_is_served(tmp_path: Path, data_root: Path) -> None:
    server = Hub(tmp_path, data_root, datasets=["beta"]).start()
    try:
        server.wait_ready("beta")
        assert set(server.datasets()) == {"beta"}
        assert requests.get(f"{server.url}/package/alpha.zip", timeout=5).status_code == 404
    finally:
        server.stop()


def test_workers_die_with_a_killed_parent(tmp_path: Path, data_root: Path) -> None:
    """SIGKILL of serve's parent must not leave workers holding the port."""
    port = free_port()
    server = Hub(tmp_path, data_root, port=port, workers=3).start()
    server.stop(signal.SIGKILL)

    def port_free() -> bool:  # the port is free once every worker is gone
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
            return True

    wait_until(port_free, "the workers to die with the killed parent (the port to be free)",
               timeout=10)
    server.start()
    assert requests.get(f"{server.url}/health", timeout=5).json() == {"status": "ok"}
    server.stop()
