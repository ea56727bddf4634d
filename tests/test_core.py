"""Core mechanics: state files, locks, HTTP retries, sd_notify, time, logging."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from datahubsync.core.errors import LockedError
from datahubsync.core.http import RetryPolicy, get_json, make_session
from datahubsync.core.locking import hold_lock
from datahubsync.core.logsetup import setup_logging
from datahubsync.core.sdnotify import notify
from datahubsync.core.statefile import AtomicFile, created_mode, read_json, write_json_atomic
from datahubsync.core.timeutil import format_hub_time, parse_hub_time, zone
from tests.helpers import client_config, run_cli

# --- state files ---------------------------------------------------------------------------


def test_atomic_write_survives_kill_mid_write(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    write_json_atomic(target, {"v": "old"})
    pid = os.fork()
    if pid == 0:  # child: die right before the rename, after the temp file is written
        os.replace = lambda *a, **k: os._exit(9)  # type: ignore[assignment]
        write_json_atomic(target, {"v": "new"})
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    assert read_json(target, None) == {"v": "old"}


def test_an_atomic_file_block_puts_the_whole_file_in_place_or_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "pic.jpg"
    dest.write_bytes(b"old")
    with pytest.raises(ConnectionError), AtomicFile(dest) as writer:
        writer.write(b"half a pic")
        raise ConnectionError("the peer stopped")
    assert dest.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "pic.jpg"]  # no temp file left
    with AtomicFile(dest) as writer:
        writer.write(b"new ")
        writer.write(memoryview(b"picture"))
    assert dest.read_bytes() == b"new picture" and writer.size == 11
    with AtomicFile(dest) as writer:  # committed inside the block: not again at its end
        writer.write(b"x")
        writer.commit()
    assert dest.read_bytes() == b"x"
    (tmp_path / "adir").mkdir()  # the rename at the block's end fails: no temp file stays
    with pytest.raises(IsADirectoryError), AtomicFile(tmp_path / "adir") as writer:
        writer.write(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "pic.jpg"]


def test_created_mode_is_what_open_gives_a_new_file(tmp_path: Path) -> None:
    for umask in (0o022, 0o077, 0o002):
        old = os.umask(umask)
        try:
            (tmp_path / f"f{umask}").touch()
            assert created_mode() == (tmp_path / f"f{umask}").stat().st_mode & 0o777
        finally:
            os.umask(old)


def test_corrupt_state_file_is_moved_aside(tmp_path: Path) -> None:
    target = tmp_path / ".last_sync.json"
    target.write_text('{"alpha": "2026-')
    assert read_json(target, {}) == {}
    assert not target.exists()
    assert len(list(tmp_path.glob(".last_sync.json.corrupt-*"))) == 1


# --- locks ---------------------------------------------------------------------------------


def test_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with hold_lock(lock):
        with pytest.raises(LockedError, match=rf"another run holds {lock} \(pid {os.getpid()}"):
            with hold_lock(lock):
                pass
    with hold_lock(lock):  # released again
        pass


def test_cli_lock_contention_exits_75(tmp_path: Path) -> None:
    cfg = client_config(tmp_path, "http://127.0.0.1:9", ["alpha"])
    with hold_lock(tmp_path / "clientstate" / "datasets.lock"):
        result = run_cli(["datasets", "sync"], config=cfg, expect=75)
    assert "another run holds" in result.err and "datasets.lock" in result.err


# --- HTTP retries against a real server ----------------------------------------------------


class _Script(BaseHTTPRequestHandler):
    """Answers from a per-server script of (status, headers, body)."""

    def do_GET(self) -> None:  # noqa: N802
        server = self.server
        server.hits += 1  # type: ignore[attr-defined]
        status, headers, body = server.script.pop(0) if server.script else (200, {}, b"{}")  # type: ignore[attr-defined]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Script)
    server.script, server.hits = [], 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/x"


def test_retries_5xx_then_succeeds(scripted: ThreadingHTTPServer) -> None:
    sleeps: list[float] = []
    scripted.script += [(503, {}, b""), (500, {}, b""), (200, {}, b'{"ok": 1}')]  # type: ignore[attr-defined]
    policy = RetryPolicy(attempts=5, sleep=sleeps.append)
    assert get_json(make_session(), _url(scripted), 5, policy) == {"ok": 1}
    assert scripted.hits == 3 and len(sleeps) == 2  # type: ignore[attr-defined]


def test_429_honours_retry_after(scripted: ThreadingHTTPServer) -> None:
    sleeps: list[float] = []
    scripted.script += [(429, {"Retry-After": "7"}, b""), (200, {}, b"{}")]  # type: ignore[attr-defined]
    get_json(make_session(), _url(scripted), 5, RetryPolicy(sleep=sleeps.append))
    assert sleeps == [7.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_other_4xx_never_retried(scripted: ThreadingHTTPServer, status: int) -> None:
    scripted.script += [(status, {}, b"")] * 3  # type: ignore[attr-defined]
    with pytest.raises(requests.HTTPError):
        get_json(make_session(), _url(scripted), 5, RetryPolicy(sleep=lambda s: None))
    assert scripted.hits == 1  # type: ignore[attr-defined]


def test_408_retried(scripted: ThreadingHTTPServer) -> None:
    scripted.script += [(408, {}, b""), (200, {}, b"[]")]  # type: ignore[attr-defined]
    assert get_json(make_session(), _url(scripted), 5, RetryPolicy(sleep=lambda s: None)) == []


def test_connect_error_retried_then_raised() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once we leave: nothing listens
    sleeps: list[float] = []
    with pytest.raises(requests.ConnectionError):
        get_json(make_session(), f"http://127.0.0.1:{port}/", 2,
                 RetryPolicy(attempts=3, sleep=sleeps.append))
    assert len(sleeps) == 2
    assert all(0 < s <= 30 for s in sleeps)


# --- sd_notify -----------------------------------------------------------------------------


def test_sd_notify_sends_datagram(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert notify("READY=1", {"NOTIFY_SOCKET": str(path)})
        assert sock.recv(100) == b"READY=1"
    assert not notify("READY=1", {})


# --- hub time ------------------------------------------------------------------------------


def test_naive_and_aware_compared_as_instants() -> None:
    shanghai = zone("Asia/Shanghai")
    naive = parse_hub_time("2026-11-23T19:31:54.791098", shanghai)
    aware = parse_hub_time("2026-11-23T11:31:54.791098+00:00", shanghai)
    assert naive == aware
    # string comparison would get this wrong: "2026-11-23T20:00:00+08:00" < "...T19:31..." is
    # false, but a UTC string of a later instant sorts earlier
    later = parse_hub_time("2026-11-23T12:00:00+00:00", shanghai)
    assert later > naive and "2026-11-23T12:00:00+00:00" < "2026-11-23T19:31:54.791098"


def test_format_hub_time_shape() -> None:
    tz = zone("Asia/Shanghai")
    moment = dt.datetime(2026, 11, 23, 11, 31, 54, 791098, tzinfo=dt.UTC)
    assert format_hub_time(moment, tz) == "2026-11-23T19:31:54.791098+08:00"
    assert format_hub_time(moment.replace(microsecond=0), tz) == "2026-11-23T19:31:54+08:00"


# --- logging -------------------------------------------------------------------------------


def test_log_file_reopened_after_rotation_and_secrets_masked(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "sync.log"
    setup_logging("INFO", log_file)
    logger = logging.getLogger("datahubsync.test")
    logger.info("fetching http://user:s3cret@hub.example/api")
    os.rename(log_file, tmp_path / "logs" / "sync.log.1")  # what logrotate does
    logger.info("after rotation")
    rotated = (tmp_path / "logs" / "sync.log.1").read_text()
    assert "s3cret" not in rotated and "http://***@hub.example/api" in rotated
    assert "after rotation" in log_file.read_text()
    setup_logging("INFO")


def test_version_and_help_of_every_command() -> None:
    from datahubsync import __version__

    assert run_cli(["--version"]).out.strip() == f"datahubsync, version {__version__}"
    for args in (["--help"], ["datasets", "--help"], ["datasets", "sync", "--help"],
                 ["serve", "--help"], ["doctor", "--help"]):
        out = run_cli(args).out
        assert "Usage:" in out
    assert "Exit status" in run_cli(["datasets", "sync", "--help"]).out


def test_json_flag_gives_parseable_output(tmp_path: Path) -> None:
    cfg = client_config(tmp_path, "http://127.0.0.1:9", ["alpha"])
    doc = json.loads(run_cli(["datasets", "status", "--json"], config=cfg).out)
    assert doc["datasets"][0]["name"] == "alpha" and doc["datasets"][0]["present"] is False
