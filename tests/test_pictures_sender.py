"""The existing picture sender (``photoUrl``, ``callTime``, ``cameraCode``) against a real
`serve`, a real file server and a real `pictures run`: ids, kill -9, call_back, report."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.crashkit import crash_env
from tests.helpers import call_json, clean_env, cli_argv, free_port, wait_until, write_yaml

PUSH = "/api/v1/pictures/tasks"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The "remote file server" the sender's photoUrls point at."""
    root = tmp_path / "remote-files"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


class _Receiver(BaseHTTPRequestHandler):
    """ "Remote server 2": records each report, answers 200."""

    reports: list[dict[str, Any]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            type(self).reports.append({**body, "auth": self.headers.get("Authorization")})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.reports = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/report"
    server.shutdown()


def configs(tmp: Path, port: int, report_url: str, **pictures: Any) -> tuple[Path, Path]:
    """serve's config (push source, loopback trusted) and pictures run's: one ledger."""
    ledger = f"sqlite:///{tmp / 'ledger.db'}"
    counting = (f"curl -s -o /dev/null -d id=$1 -d numOfPeo=$(( $1 % 7 )) "
                f"http://127.0.0.1:{port}/call_back")
    section = {"source": "push", "ledger_url": ledger, "local_root": str(tmp / "mirror"),
               "workers": 4, "timeout": 10, "retry_initial": 0.1, "retry_max": 0.5,
               "poll_interval": 3600, "callback_url": report_url,
               "callback_headers": {"Authorization": "Bearer remote-2-key"},
               "process_command": ["sh", "-c", counting, "count", "{task_id}"],
               "max_push_bytes": 65536, **pictures}
    (tmp / "hubdata").mkdir(exist_ok=True)
    serve = write_yaml(tmp / "serve.yaml", {"state_dir": str(tmp / "state"), "pictures": section,
                                            "serve": {"host": "127.0.0.1", "port": port,
                                                      "data_root": str(tmp / "hubdata"),
                                                      "workers": 2, "check_interval": 60}})
    client = write_yaml(tmp / "client.yaml", {"state_dir": str(tmp / "state"),
                                              "pictures": section})
    return serve, client


def start_serve(tmp: Path, config: Path, env: dict[str, str] | None = None
                ) -> subprocess.Popen[bytes]:
    port_file = tmp / "serve.port"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(cli_argv() + ["--config", str(config), "serve", "--port-file",
                                          str(port_file)], stdout=subprocess.DEVNULL,
                            stderr=(tmp / "serve.log").open("ab"), env=clean_env(env))
    wait_until(lambda: port_file.exists() or proc.poll() is not None, "serve to start")
    assert proc.poll() is None, (tmp / "serve.log").read_text()[-3000:]
    return proc


def ledger_rows(tmp: Path) -> list[tuple[str, str, str]]:
    engine = sa.create_engine(f"sqlite:///{tmp / 'ledger.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT t.task_id, f.remote, t.state FROM pic_tasks t JOIN pic_files f "
            "ON f.task_id = t.task_id WHERE t.source = 'sender'")).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def test_sender_body_and_call_back_contract(tmp_path: Path, file_server: tuple[str, Path],
                                            receiver: str) -> None:
    base, root = file_server
    (root / "a.jpg").write_bytes(b"jpeg-a")
    port = free_port()
    push = f"http://127.0.0.1:{port}{PUSH}"
    serve_cfg, _ = configs(tmp_path, port, receiver)
    proc = start_serve(tmp_path, serve_cfg)
    try:
        picture = {"photoUrl": f"{base}/a.jpg", "callTime": "2025-10-01 08:00:00",
                   "cameraCode": "CAM01", "extra": "ignored"}
        assert call_json(push, "POST", picture, text=True) == (200, "success")
        # the same call again: same picture
        assert call_json(push, "POST", picture, text=True) == (200, "success")
        assert call_json(push, "POST", [dict(picture, cameraCode="CAM02"),
                                        dict(picture, cameraCode="CAM03")],
                         text=True) == (200, "success")
        status, text = call_json(push, "POST", {"photoUrl": "file:///etc/passwd"}, text=True)
        assert status == 400 and "photoUrl" in text
        status, text = call_json(push, "POST", {"photoUrl": f"{base}/a.jpg", "cameraCode": ["x"]},
                                 text=True)
        assert status == 400 and "cameraCode" in text
        rows = ledger_rows(tmp_path)
        assert sorted(int(r[0]) for r in rows) == [1, 2, 3]
        # call_back for an unknown picture is a 404, a bad one a 400
        url = f"http://127.0.0.1:{port}/call_back"
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{url}?id=99&numOfPeo=1", timeout=10)
        assert info.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{url}?id=1", timeout=10)
        assert info.value.code == 400
    finally:
        proc.terminate()
        proc.wait(30)


def test_1000_pictures_from_4_senders_while_serve_is_killed(
        tmp_path: Path, file_server: tuple[str, Path], receiver: str) -> None:
    """Every acknowledged picture is stored once with its own id, none reused after the
    kill -9 (at the worst point: stored, not yet answered), and every one is fetched,
    processed (the script calls call_back), and reported to remote server 2."""
    base, root = file_server
    for n in range(1000):
        (root / f"p{n}.jpg").write_bytes(os.urandom(64) + str(n).encode())
    port = free_port()
    push = f"http://127.0.0.1:{port}{PUSH}"
    serve_cfg, client_cfg = configs(tmp_path, port, receiver)
    acknowledged: dict[int, int] = {}  # picture number -> acknowledgements
    lock = threading.Lock()
    state = {"proc": start_serve(tmp_path, serve_cfg, crash_env("push.stored:150"))}

    def sender(first: int) -> None:
        for n in range(first, 1000, 4):
            body = {"photoUrl": f"{base}/p{n}.jpg", "callTime": f"2025-10-01 08:{n // 60:02d}:"
                    f"{n % 60:02d}", "cameraCode": f"CAM{n % 4}"}
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # the sender retries until told success
                try:
                    if call_json(push, "POST", body, text=True) == (200, "success"):
                        with lock:
                            acknowledged[n] = acknowledged.get(n, 0) + 1
                        break
                except (OSError, urllib.error.URLError):
                    pass
                time.sleep(0.1)  # the sender's pace while serve is down, not a measure

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    first = state["proc"]
    assert first.wait(300) != 0  # a worker died at the crash point: the service stops
    ids_before = {int(r[0]) for r in ledger_rows(tmp_path)}
    state["proc"] = start_serve(tmp_path, serve_cfg)  # what systemd does
    for thread in threads:
        thread.join(600)
    try:
        assert sorted(acknowledged) == list(range(1000))
        rows = ledger_rows(tmp_path)
        urls = [r[1] for r in rows]
        assert len(urls) == len(set(urls)) == 1000  # each picture once
        ids = [int(r[0]) for r in rows]
        assert len(set(ids)) == 1000
        assert ids_before and min(set(ids) - ids_before) > max(ids_before)  # none reused
        worker = subprocess.Popen(cli_argv() + ["--config", str(client_cfg), "pictures", "run"],
                                  stdout=subprocess.DEVNULL,
                                  stderr=(tmp_path / "run.log").open("wb"), env=clean_env())
        try:
            wait_until(lambda: len({r["id"] for r in _Receiver.reports}) == 1000,
                       "every picture reported", timeout=600, interval=0.5)
        finally:
            worker.terminate()
            worker.wait(60)
    finally:
        state["proc"].terminate()
        state["proc"].wait(60)
    by_id = {r["id"]: r for r in _Receiver.reports}
    for row_id, url, _state in rows:
        report = by_id[int(row_id)]
        assert report["photoUrl"] == url and report["auth"] == "Bearer remote-2-key"
        assert str(report["numOfPeo"]) == str(int(row_id) % 7)
    assert {r[2] for r in ledger_rows(tmp_path)} == {"reported"}
    mirror = tmp_path / "mirror" / "_urls" / "127.0.0.1"
    assert len(list(mirror.glob("p*.jpg"))) == 1000


def test_a_pushed_picture_is_fetched_without_waiting_for_the_poll(
        tmp_path: Path, file_server: tuple[str, Path], receiver: str) -> None:
    """poll_interval is an hour: only the wake-up from serve can start the download
    within the test's bound (the bound is for a hung test, not a measure)."""
    base, root = file_server
    (root / "late.jpg").write_bytes(b"late picture")
    port = free_port()
    push = f"http://127.0.0.1:{port}{PUSH}"
    serve_cfg, client_cfg = configs(tmp_path, port, receiver, process_command=None,
                                    callback_url=None)
    proc = start_serve(tmp_path, serve_cfg)
    worker = subprocess.Popen(cli_argv() + ["--config", str(client_cfg), "pictures", "run"],
                              stdout=subprocess.DEVNULL, stderr=(tmp_path / "run.log").open("wb"),
                              env=clean_env())
    try:
        wakeup = tmp_path / "state" / "pictures" / "wake.sock"
        wait_until(wakeup.exists, "pictures run to listen for wake-ups")
        assert call_json(push, "POST", {"photoUrl": f"{base}/late.jpg",
                                        "callTime": "2025-10-01 09:00:00", "cameraCode": "CAM9"},
                         text=True) == (200, "success")
        target = tmp_path / "mirror" / "_urls" / "127.0.0.1" / "late.jpg"
        wait_until(target.exists, "the pushed picture in the mirror", timeout=120)
        assert target.read_bytes() == b"late picture"
    finally:
        worker.terminate()
        worker.wait(60)
        proc.terminate()
        proc.wait(60)


KILLED_AT = ["push.stored:150"]
