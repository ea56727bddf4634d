"""The batch API of a real `serve`: start, poll, history, cancel, 400/401/404/409."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.batchkit import create_table, day_counts, glob_job, slow_job, write_day
from tests.helpers import Hub, call_json, wait_until

TOKEN = "s3cret-batch-token"
BASE = "/api/v1/sync-status/sync/batch"


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
              trusted_networks=[],  # these tests send a token; the seed's curl has its own
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
    status, doc = call_json(f"{hub.url}{BASE}/progress/{task_id}", token=TOKEN)
    assert status == 200 and doc["status"] == "success", doc
    return doc["data"]


def success(status: int, answer: dict[str, Any]) -> dict[str, Any]:
    """The seed's envelope: 200 {"status": "success", "data": {...}} and nothing else."""
    assert status == 200 and answer["status"] == "success", answer
    assert set(answer) == {"status", "data"}, answer
    return answer["data"]


def refused(answer: dict[str, Any]) -> str:
    assert answer["status"] == "error" and isinstance(answer["message"], str), answer
    assert set(answer) <= {"status", "message", "data"}, answer
    return answer["message"]


def wait_status(hub: Hub, task_id: str, wanted: set[str], timeout: float = 60) -> dict[str, Any]:
    return wait_until(lambda: (d := progress(hub, task_id))["status"] in wanted and d,
                      f"task {task_id} to be {wanted}", timeout=timeout, interval=0.02)


def test_start_poll_until_done_and_history(server: Hub, pg_url: str) -> None:
    answer = success(*call_json(server.url + BASE, "POST", {"start_date": "2025-10-04",
                                                            "end_date": "2025-10-08"},
                                token=TOKEN))
    task_id = answer["task_id"]
    assert answer["total_days"] == 5 and "5 days" in answer["message"]
    doc = wait_status(server, task_id, {"completed", "failed"})
    assert doc["status"] == "completed"
    for key in ("status", "start_time", "end_time", "duration_seconds", "progress_percent",
                "estimated_completion", "current_date", "total", "current", "success",
                "failed", "skipped", "errors", "message"):
        assert key in doc
    assert (doc["total"], doc["success"], doc["skipped"], doc["failed"]) == (5, 3, 2, 0)
    assert doc["current"] == 5
    assert day_counts(pg_url, server.pg_table) == {  # type: ignore[attr-defined]
        "2025-10-06": 4, "2025-10-07": 4, "2025-10-08": 4}

    second = success(*call_json(server.url + BASE, "POST", {
        "start_date": "2025-10-06", "end_date": "2025-10-06", "job": "bars"}, token=TOKEN))
    wait_status(server, second["task_id"], {"completed"})
    history = success(*call_json(server.url + BASE, token=TOKEN))
    assert [t["task_id"] for t in history["tasks"]] == [second["task_id"], task_id]
    assert all("days" not in t and t["duration_seconds"] is not None for t in history["tasks"])


def test_second_start_on_the_same_target_gets_409_then_cancel(server: Hub,
                                                              pg_url: str) -> None:
    first = success(*call_json(server.url + BASE, "POST", {
        "start_date": "2025-10-06", "end_date": "2025-10-10", "job": "slow"}, token=TOKEN))
    status, answer = call_json(server.url + BASE, "POST", {"start_date": "2025-10-06",
                                                           "end_date": "2025-10-06"},
                               token=TOKEN)
    assert status == 409
    assert first["task_id"] in refused(answer)
    # the refused request leaves no task behind
    history = success(*call_json(server.url + BASE, token=TOKEN))
    assert [t["task_id"] for t in history["tasks"]] == [first["task_id"]]

    cancelled = success(*call_json(f"{server.url}{BASE}/{first['task_id']}/cancel", "POST",
                                   token=TOKEN))
    assert cancelled["cancel_requested"] is True
    doc = wait_status(server, first["task_id"], {"cancelled"})
    assert doc["success"] < 5
    counts = day_counts(pg_url, server.pg_table)  # type: ignore[attr-defined]
    assert all(n == 100 for n in counts.values())  # whole days or nothing


def test_job_outlives_a_server_restart(server: Hub, pg_url: str) -> None:
    answer = success(*call_json(server.url + BASE, "POST", {
        "start_date": "2025-10-06", "end_date": "2025-10-07", "job": "slow"}, token=TOKEN))
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
    status, answer = call_json(server.url + BASE, "POST", body, token=TOKEN)
    assert status == 400
    assert answer["data"]["field"] == field and words in refused(answer)


def test_auth_size_and_unknown_task(server: Hub) -> None:
    body = {"start_date": "2025-10-06", "end_date": "2025-10-06"}
    api = server.url + BASE
    assert call_json(api, "POST", body, token=None)[0] == 401
    assert call_json(api, "POST", body, token="wrong")[0] == 401
    assert call_json(api, token="s3cret-batch-toke")[0] == 401
    assert call_json(f"{api}/progress/x", token=None)[0] == 401
    assert call_json(api, "POST", raw=b"{" + b" " * 100_000 + b"}", token=TOKEN)[0] == 413
    assert call_json(api, "POST", raw=b"{not json", token=TOKEN)[0] == 400
    status, answer = call_json(f"{api}/progress/no-such-task", token=TOKEN)
    assert status == 404 and "no-such-task" in refused(answer)
    assert call_json(f"{api}/no-such-task/cancel", "POST", token=TOKEN)[0] == 404
    assert TOKEN not in (server.log.read_text())


SEED_START = """curl -X POST http://127.0.0.1:{port}/api/v1/sync-status/sync/batch \\
  -H "Content-Type: application/json" \\
  -d '{{
    "start_date": "2025-10-06",
    "end_date": "2025-10-08"
  }}'"""
SEED_PROGRESS = "curl http://127.0.0.1:{port}/api/v1/sync-status/sync/batch/progress/{task_id}"


def front_end_reads(reply: str) -> dict[str, Any]:
    """What the existing front-end does with a reply: a failed request unless
    ``status`` is ``success``; then everything it shows comes from ``data``."""
    doc = json.loads(reply)
    if doc.get("status") != "success":
        raise AssertionError(f"the front-end shows an error: {doc.get('message')}")
    return doc["data"]


def test_the_seed_curl_examples_as_written(tmp_path: Path, pg_url: str, pg_table: str) -> None:
    """No token from loopback (serve.trusted_networks' default); the seed's front-end
    parses every reply, the task's own state only in data.status."""
    import subprocess

    create_table(pg_url, pg_table)
    folder = tmp_path / "csv"
    for day in ("2025-10-06", "2025-10-07", "2025-10-08"):
        write_day(folder, day, rows=4)
    (tmp_path / "empty").mkdir()
    hub = Hub(tmp_path, tmp_path / "empty", workers=2,
              config_extra={"batch": {"jobs": {"bars": glob_job(pg_url, pg_table, folder)}}})
    hub.start()
    try:
        port = int(hub.port_file.read_text())
        started = front_end_reads(subprocess.run(
            ["sh", "-c", SEED_START.format(port=port)], capture_output=True, text=True,
            check=True, timeout=60).stdout)
        assert started["total_days"] == 3 and started["task_id"] and started["message"]

        def poll() -> dict[str, Any] | None:
            data = front_end_reads(subprocess.run(
                ["sh", "-c", SEED_PROGRESS.format(port=port, task_id=started["task_id"])],
                capture_output=True, text=True, check=True, timeout=60).stdout)
            return data if data["status"] in ("completed", "failed") else None

        data = wait_until(poll, "the task to finish", timeout=30, interval=0.02)
        assert data["status"] == "completed" and data["current"] == 3
        assert data["total"] == 3 and data["success"] == 3 and data["errors"] == []
        assert data["progress_percent"] == 100.0 and data["message"]
        assert day_counts(pg_url, pg_table) == {d: 4 for d in ("2025-10-06", "2025-10-07",
                                                                "2025-10-08")}
    finally:
        hub.stop()
