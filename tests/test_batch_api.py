"""The batch API of a real `serve`: start, poll, history, cancel, 400/401/404/409."""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.batchkit import create_table, day_counts, glob_job, slow_job, wait_for, write_day
from tests.helpers import Hub

TOKEN = "s3cret-batch-token"
BASE = "/api/v1/sync-status/sync/batch"


def call(hub: Hub, method: str, path: str, body: Any = None, token: str | None = TOKEN,
         raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(hub.url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def server(tmp_path: Path, pg_url: str, pg_table: str) -> Iterator[Hub]:
    create_table(pg_url, pg_table)
    folder = tmp_path / "csv"
    for day in ("2025-10-06", "2025-10-07", "2025-10-08"):
        write_day(folder, day, rows=4)
    jobs = {"bars": glob_job(pg_url, pg_table, folder),
            "slow": slow_job(tmp_path, pg_url, pg_table, rows=100, delay=0.05)}
    (tmp_path / "empty").mkdir()
    hub = Hub(tmp_path, tmp_path / "empty", api_tokens=[TOKEN], workers=2,
              config_extra={"batch": {"jobs": jobs, "default_job": "bars", "max_days": 31}})
    hub.start()
    hub.pg_table = pg_table  # type: ignore[attr-defined]
    try:
        yield hub
    finally:
        hub.stop()
        for doc_path in (tmp_path / "hubstate" / "batch" / "tasks").glob("*.json"):
            doc = json.loads(doc_path.read_text())
            if doc["status"] == "running":  # never leave a job process behind
                try:
                    os.kill(doc["pid"], signal.SIGTERM)
                except ProcessLookupError:
                    pass


def progress(hub: Hub, task_id: str) -> dict[str, Any]:
    status, doc = call(hub, "GET", f"{BASE}/progress/{task_id}")
    assert status == 200
    return doc


def wait_status(hub: Hub, task_id: str, wanted: set[str], timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (d := progress(hub, task_id))["status"] in wanted and d,
                    timeout=timeout, what=f"task {task_id} to be {wanted}")


def test_start_poll_until_done_and_history(server: Hub, pg_url: str) -> None:
    status, answer = call(server, "POST", BASE, {"start_date": "2025-10-04",
                                                  "end_date": "2025-10-08"})
    assert status == 202, answer
    task_id = answer["task_id"]
    assert answer["data"]["total_days"] == 5  # the seed's response shape still works
    doc = wait_status(server, task_id, {"completed", "failed"})
    assert doc["status"] == "completed"
    for key in ("status", "start_time", "end_time", "duration_seconds", "progress_percent",
                "estimated_completion", "current_date", "total", "success", "failed",
                "skipped", "errors"):
        assert key in doc
    assert (doc["total"], doc["success"], doc["skipped"], doc["failed"]) == (5, 3, 2, 0)
    assert doc["data"]["status"] == "completed"
    assert day_counts(pg_url, server.pg_table) == {  # type: ignore[attr-defined]
        "2025-10-06": 4, "2025-10-07": 4, "2025-10-08": 4}

    status, second = call(server, "POST", BASE, {"start_date": "2025-10-06",
                                                  "end_date": "2025-10-06", "job": "bars"})
    assert status == 202
    wait_status(server, second["task_id"], {"completed"})
    status, history = call(server, "GET", BASE)
    assert status == 200
    assert [t["task_id"] for t in history["tasks"]] == [second["task_id"], task_id]
    assert all("days" not in t and t["duration_seconds"] is not None for t in history["tasks"])


def test_second_start_on_the_same_target_gets_409_then_cancel(server: Hub,
                                                              pg_url: str) -> None:
    status, first = call(server, "POST", BASE, {"start_date": "2025-10-06",
                                                 "end_date": "2025-10-10", "job": "slow"})
    assert status == 202
    status, refused = call(server, "POST", BASE, {"start_date": "2025-10-06",
                                                   "end_date": "2025-10-06"})
    assert status == 409
    assert first["task_id"] in refused["error"]
    # the refused request leaves no task behind
    status, history = call(server, "GET", BASE)
    assert [t["task_id"] for t in history["tasks"]] == [first["task_id"]]

    status, cancelled = call(server, "POST", f"{BASE}/{first['task_id']}/cancel")
    assert status == 202 and cancelled["cancel_requested"] is True
    doc = wait_status(server, first["task_id"], {"cancelled"})
    assert doc["success"] < 5
    counts = day_counts(pg_url, server.pg_table)  # type: ignore[attr-defined]
    assert all(n == 100 for n in counts.values())  # whole days or nothing


def test_job_outlives_a_server_restart(server: Hub, pg_url: str) -> None:
    status, answer = call(server, "POST", BASE, {"start_date": "2025-10-06",
                                                  "end_date": "2025-10-07", "job": "slow"})
    assert status == 202
    assert server.stop() == 0
    server.start()
    doc = wait_status(server, answer["task_id"], {"completed", "failed", "crashed"})
    assert doc["status"] == "completed", doc
    assert day_counts(pg_url, server.pg_table) == {  # type: ignore[attr-defined]
        "2025-10-06": 100, "2025-10-07": 100}


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"start_date": "2025/10/01", "end_date": "2025-10-02"}, "start_date", "YYYY-MM-DD"),
    ({"start_date": "2025-10-01", "end_date": "2025-02-30"}, "end_date", "YYYY-MM-DD"),
    ({"start_date": "2025-10-09", "end_date": "2025-10-01"}, "end_date", "before"),
    ({"start_date": "2025-01-01", "end_date": "2025-12-31"}, "end_date", "max_days"),
    ({"end_date": "2025-10-01"}, "start_date", "required"),
    ({"start_date": "2025-10-01", "end_date": "2025-10-02", "job": "nope"}, "job", "no job"),
    ([1, 2], "body", "object"),
])
def test_bad_requests_get_400_naming_the_field(server: Hub, body: Any, field: str,
                                               words: str) -> None:
    status, answer = call(server, "POST", BASE, body)
    assert status == 400
    assert answer["field"] == field and words in answer["error"]


def test_auth_size_and_unknown_task(server: Hub) -> None:
    body = {"start_date": "2025-10-06", "end_date": "2025-10-06"}
    assert call(server, "POST", BASE, body, token=None)[0] == 401
    assert call(server, "POST", BASE, body, token="wrong")[0] == 401
    assert call(server, "GET", BASE, token="s3cret-batch-toke")[0] == 401
    assert call(server, "GET", f"{BASE}/progress/x", token=None)[0] == 401
    assert call(server, "POST", BASE, raw=b"{" + b" " * 100_000 + b"}")[0] == 413
    assert call(server, "POST", BASE, raw=b"{not json")[0] == 400
    assert call(server, "GET", f"{BASE}/progress/no-such-task")[0] == 404
    assert call(server, "POST", f"{BASE}/no-such-task/cancel")[0] == 404
    assert TOKEN not in (server.log.read_text())
