"""Seed 004's pipeline: push API (acknowledged once durable), processing, callback, retries."""

from __future__ import annotations

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from datahubsync.pictures.ledger import Ledger
from tests.crashkit import killed_at
from tests.helpers import call_json, free_port, run_cli
from tests.pictures_client_kit import (
    TOKEN,
    check_mirror,
    make_pictures,
    pictures_config,
    sqlite_tasks,
    start_server,
)


def test_push_acknowledged_only_once_durable_then_fetched(tmp_path: Path) -> None:
    pics = make_pictures(tmp_path / "srv", 2, missing=1)
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    pictures = {"source": "push", "ledger_url": ledger_url, "max_push_bytes": 4096}
    server = start_server(tmp_path, pics.root, config_extra={"pictures": pictures},
                          port=free_port(),  # the same port after the restart: URLs stay valid
                          workers=1,  # one process: SIGKILL takes the whole server down
                          trusted_networks=[])  # loopback needs a token here too
    api = f"{server.url}/api/v1/pictures/tasks"
    first, second = pics.tasks
    try:
        body = {"task_id": "cam7-0001", "camera_id": "CAM07", "time": "2025-10-01T08:00:00",
                "images": first.paths}
        assert call_json(api, "POST", body, token=None, timeout=10)[0] == 401
        assert call_json(api, "POST", body, token="wrong", timeout=10)[0] == 401
        images = [first.paths[0], "D:\\pic\\..\\x.jpg"]
        code, doc = call_json(api, "POST", {**body, "images": images}, token=TOKEN, timeout=10)
        assert code == 400 and doc["field"] == "images[1]"
        assert call_json(api, "POST", {**body, "colour": 1}, token=TOKEN,
                         timeout=10)[1]["field"] == "colour"
        assert call_json(api, "POST", {k: v for k, v in body.items() if k != "task_id"},
                         token=TOKEN, timeout=10)[1]["field"] == "task_id"
        assert call_json(api, "POST", raw=b"{" + b" " * 5000 + b"}", token=TOKEN,
                         timeout=10)[0] == 413
        assert call_json(api, "POST", raw=b"{nope", token=TOKEN,
                         timeout=10)[1]["field"] == "body"
        code, doc = call_json(api, "POST", body, token=TOKEN, timeout=10)
        assert (code, doc) == (202, {"task_id": "cam7-0001", "files": 8, "duplicate": False})
        # URLs are accepted too (here: the same server's /files route).
        url_images = [f"{server.url}/files/{p.replace(chr(92), '/')}" for p in second.paths]
        assert call_json(api, "POST", {"task_id": 2, "images": url_images}, token=TOKEN,
                         timeout=10)[0] == 202
        server.stop(signal.SIGKILL)  # right after the 202: nothing may be lost
    finally:
        server.stop()
    with Ledger(ledger_url) as ledger:
        assert ledger.counts()["files"]["pending"] == 16
        assert ledger.task_info("cam7-0001")["camera_id"] == "CAM07"
    server.start()
    try:
        api = f"{server.url}/api/v1/pictures/tasks"
        # a sender's retry: acknowledged, stored once
        code, doc = call_json(api, "POST", body, token=TOKEN, timeout=10)
        assert code == 202 and doc["duplicate"] is True
        config = pictures_config(tmp_path, server.url, None, "unused", source="push",
                                 ledger_url=ledger_url)
        result = run_cli(["--json", "pictures", "once"], config=config).json()
        assert result["downloaded"] == 15 and result["missing"] == 1
        assert check_mirror(pics.__class__(pics.root, [first], {
            p: d for p, d in pics.content.items() if p in first.paths}, set()),
            tmp_path / "mirror") == []
        url_copies = sorted((tmp_path / "mirror" / "_urls").rglob("*.jpg"))
        assert len(url_copies) == 7
        status, shown = call_json(f"{api}/cam7-0001", token=TOKEN, timeout=10)
        assert status == 200, shown
        assert shown["state"] == "downloaded" and len(shown["files"]) == 8
    finally:
        server.stop()


class _Callbacks(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []
    fail_first = 1

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        failing = type(self).fail_first > 0
        type(self).fail_first -= 1
        self.send_response(500 if failing else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


PROCESS = """
import json, pathlib, sys
marker = pathlib.Path(sys.argv[1]) / ("ran-" + sys.argv[2])
if not marker.exists():
    marker.write_text("1")
    sys.exit("first run of task %s fails on purpose" % sys.argv[2])
files = sys.argv[3:]
print(json.dumps({"people": 3, "count": len(files),
                  "all_there": all(pathlib.Path(f).is_file() for f in files)}))
"""


def test_process_callback_and_retry_when_due(tmp_path: Path) -> None:
    pics = make_pictures(tmp_path / "srv", 2)
    url, table = sqlite_tasks(tmp_path, pics.tasks)
    script = tmp_path / "count_people.py"
    script.write_text(PROCESS)
    _Callbacks.bodies, _Callbacks.fail_first = [], 1
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), _Callbacks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    server = start_server(tmp_path, pics.root)
    try:
        config = pictures_config(
            tmp_path, server.url, url, table, retry_after=3600.0,
            process_command=[sys.executable, str(script), str(tmp_path), "{task_id}", "{files}"],
            callback_url=f"http://127.0.0.1:{hooks.server_port}/report")
        first = run_cli(["--json", "pictures", "once"], config=config, expect=1).json()
        assert first["downloaded"] == 16 and first["step_failures"] == 2
        assert "fails on purpose" in first["errors"][0]
        soon = run_cli(["--json", "pictures", "once"], config=config).json()
        assert soon["processed"] == 0  # not yet: the retry window has not passed
        run_cli(["pictures", "retry"], config=config)  # due now, as after the window
        third = run_cli(["--json", "pictures", "once"], config=config, expect=1).json()
        assert third["processed"] == 2 and third["reported"] == 1
        assert third["step_failures"] == 1 and "HTTP 500" in third["errors"][0]
        run_cli(["pictures", "retry"], config=config)
        fourth = run_cli(["--json", "pictures", "once"], config=config).json()
        assert fourth["reported"] == 1
        status = run_cli(["--json", "pictures", "status"], config=config).json()
        assert status["tasks"]["reported"] == 2
    finally:
        server.stop()
        hooks.shutdown()
    assert len(_Callbacks.bodies) == 3
    reported = {b["task_id"]: b for b in _Callbacks.bodies[1:]}
    assert set(reported) == {"1", "2"}
    for body in reported.values():
        assert body["result"]["output"] == {"people": 3, "count": 8, "all_there": True}
        assert all(Path(f["local"]).is_file() for f in body["files"])


COUNTING = """
import json, pathlib, sys
runs = pathlib.Path(sys.argv[1]) / ("runs-" + sys.argv[2])
with runs.open("a") as fh:
    fh.write("1")
print(json.dumps({"people": 1}))
"""
KILLED_AT = ["pictures.step_done:1", "pictures.step_done:2"]


def test_kill_9_after_each_step_commit(tmp_path: Path) -> None:
    """A step committed before a kill is not run again; a callback sent but not committed is
    sent again (at least once), and every task ends reported."""
    pics = make_pictures(tmp_path / "srv", 3)
    url, table = sqlite_tasks(tmp_path, pics.tasks)
    script = tmp_path / "count_runs.py"
    script.write_text(COUNTING)
    _Callbacks.bodies, _Callbacks.fail_first = [], 0
    hooks = ThreadingHTTPServer(("127.0.0.1", 0), _Callbacks)
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    server = start_server(tmp_path, pics.root)
    try:
        config = pictures_config(
            tmp_path, server.url, url, table,
            process_command=[sys.executable, str(script), str(tmp_path), "{task_id}"],
            callback_url=f"http://127.0.0.1:{hooks.server_port}/report")
        for point in KILLED_AT:
            killed_at(point, ["pictures", "once"], config=config)
        run_cli(["pictures", "once"], config=config)
        status = run_cli(["--json", "pictures", "status"], config=config).json()
        assert status["tasks"]["reported"] == 3
    finally:
        server.stop()
        hooks.shutdown()
    for task in pics.tasks:
        assert (tmp_path / f"runs-{task.task_id}").read_text() == "1"  # processed once
    reported = [b["task_id"] for b in _Callbacks.bodies]
    assert set(reported) == {str(t.task_id) for t in pics.tasks}
    assert len(reported) <= 4  # at most the one callback in flight at a kill, again


def test_failed_step_is_due_again_after_the_retry_window(tmp_path: Path) -> None:
    """The window runs on the ledger's clock (injected here, so no test waits for it)."""
    from datahubsync.pictures.ledger import NewTask

    now = [1_000_000.0]
    with Ledger(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: now[0]) as ledger:
        ledger.add_tasks([NewTask("t1", ())])  # no pictures: downloaded at once
        assert [t for t, _ in ledger.due_tasks("downloaded")] == ["t1"]
        ledger.step_failed("t1", "exit 1", retry_after=1800, give_up_after=86400)
        now[0] += 1799
        assert ledger.due_tasks("downloaded") == []
        now[0] += 2
        assert [t for t, _ in ledger.due_tasks("downloaded")] == ["t1"]
