"""The progress document of one batch task, persisted on every change.

One JSON file per task in ``{state_dir}/batch/tasks/``, written atomically
(temp file, fsync, rename), so a reader (the API, ``batch status``, a
monitoring script) never sees half a document, and a crash or kill -9 leaves
the per-day outcomes that ``batch resume`` needs. The old script kept this in
memory only and forgot it after 30 minutes or on restart.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datahubsync.core.errors import UsageError
from datahubsync.core.locking import process_alive, process_start
from datahubsync.core.statefile import read_json, write_json_atomic

DONE = frozenset({"success", "skipped"})  # days that resume never redoes
FINAL = frozenset({"completed", "failed", "cancelled", "interrupted", "crashed"})
MAX_ERRORS = 10
ETA_WINDOW = 5  # days in the moving average behind estimated_completion

Clock = Callable[[], dt.datetime]


_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")


def checked_task_id(task_id: str) -> str:
    """A task id as ``create`` makes them (dates, a timestamp, the job name); anything else
    (a NUL, a slash, 5 000 characters from a URL) is refused before it names a file."""
    if not _TASK_ID.fullmatch(task_id):
        raise UsageError(f"not a task id: {task_id[:60]!r}")
    return task_id


def local_now() -> dt.datetime:
    return dt.datetime.now().astimezone()


def iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat(timespec="milliseconds") if moment else None


def new_document(task_id: str, job: str, kind: str, days: dict[str, str], start: dt.date,
                 end: dt.date, workers: int, now: dt.datetime) -> dict[str, Any]:
    """A task that has not started yet: every day ``pending`` or ``skipped``."""
    return {
        "task_id": task_id, "job": job, "kind": kind,
        "start_date": start.isoformat(), "end_date": end.isoformat(),
        "status": "pending", "message": "waiting to start",
        "created_at": iso(now), "start_time": None, "end_time": None,
        "duration_seconds": None, "progress_percent": 0.0, "estimated_completion": None,
        "current_date": None, "current": 0, "total": len(days),
        "success": 0, "failed": 0, "skipped": 0, "errors": [],
        "workers": workers, "pid": None, "pid_start": None, "host": socket.gethostname(),
        "days": {day: {"status": status} for day, status in days.items()},
        "runs": 0,
    }


def recount(doc: dict[str, Any]) -> None:
    """Derive the counters and the percentage from the per-day outcomes."""
    states = [e["status"] for e in doc["days"].values()]
    doc["success"] = states.count("success")
    doc["failed"] = states.count("failed")
    doc["skipped"] = states.count("skipped")
    processed = doc["success"] + doc["failed"] + doc["skipped"]
    doc["current"] = processed
    share = processed / doc["total"] if doc["total"] else 1.0
    doc["progress_percent"] = round(100.0 * share, 1)


class ProgressStore:
    """The directory of task documents: load, save, list, cancel requests."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, task_id: str) -> Path:
        return self.directory / f"{checked_task_id(task_id)}.json"

    def cancel_path(self, task_id: str) -> Path:
        return self.directory / f"{checked_task_id(task_id)}.cancel"

    def exists(self, task_id: str) -> bool:
        return self.path(task_id).is_file()

    def load(self, task_id: str) -> dict[str, Any]:
        doc = read_json(self.path(task_id), None)
        if not isinstance(doc, dict):
            raise UsageError(f"no batch task {task_id!r} (see `datahubsync batch list`)")
        return with_liveness(doc)

    def save(self, doc: dict[str, Any]) -> None:
        write_json_atomic(self.path(doc["task_id"]), doc)

    def all(self) -> Iterator[dict[str, Any]]:
        """Every task document, newest first."""
        docs = []
        for path in self.directory.glob("*.json"):
            doc = read_json(path, None)
            if isinstance(doc, dict) and "task_id" in doc:
                docs.append(with_liveness(doc))
        docs.sort(key=lambda d: (d.get("created_at") or "", d["task_id"]), reverse=True)
        return iter(docs)

    def request_cancel(self, task_id: str) -> None:
        self.cancel_path(task_id).parent.mkdir(parents=True, exist_ok=True)
        self.cancel_path(task_id).touch()

    def cancel_requested(self, task_id: str) -> bool:
        return self.cancel_path(task_id).exists()

    def clear_cancel(self, task_id: str) -> None:
        self.cancel_path(task_id).unlink(missing_ok=True)

    def prune(self, keep: int) -> list[str]:
        """Forget the oldest finished tasks beyond ``keep``; returns their ids."""
        finished = [d for d in self.all() if d["status"] in FINAL]
        removed = []
        for doc in finished[keep:]:
            self.path(doc["task_id"]).unlink(missing_ok=True)
            self.clear_cancel(doc["task_id"])
            removed.append(doc["task_id"])
        return removed


def with_liveness(doc: dict[str, Any]) -> dict[str, Any]:
    """A task that says ``running`` but whose process is gone has crashed (kill -9)."""
    if doc.get("status") == "running" and doc.get("host") == socket.gethostname():
        if not process_alive(doc.get("pid"), doc.get("pid_start")):
            doc = dict(doc, status="crashed",
                       message="the process running this task is gone; `batch resume` it")
    return doc


@dataclass
class DayOutcome:
    """What one day's unit did."""

    status: str  # success | failed | skipped | cancelled
    message: str = ""
    rows: int | None = None


class Tracker:
    """Owns a task document while it runs; every change is written atomically.

    Thread-safe: with ``--workers N`` several days run at once.
    """

    def __init__(self, store: ProgressStore, doc: dict[str, Any], clock: Clock = local_now,
                 monotonic: Callable[[], float] | None = None) -> None:
        import time

        self.store = store
        self.doc = doc
        self.clock = clock
        self.monotonic = monotonic or time.monotonic
        self._lock = threading.Lock()
        self._started_mono = self.monotonic()
        self._durations: list[float] = []
        self.writes = 0

    def _save(self) -> None:
        self.doc["updated_at"] = iso(self.clock())
        self.store.save(self.doc)
        self.writes += 1

    def start(self) -> None:
        with self._lock:
            doc = self.doc
            now = self.clock()
            doc["status"] = "running"
            doc["start_time"] = doc.get("start_time") or iso(now)
            doc["end_time"] = None
            doc["duration_seconds"] = None
            doc["pid"] = os.getpid()
            doc["pid_start"] = process_start(os.getpid())
            doc["host"] = socket.gethostname()
            doc["runs"] = int(doc.get("runs", 0)) + 1
            for entry in doc["days"].values():
                if entry["status"] in ("running", "cancelled"):
                    entry["status"] = "pending"  # interrupted last time: redo it
            self._recount()
            doc["message"] = f"started: {doc['total']} days"
            self._save()

    def day_started(self, day: str) -> None:
        with self._lock:
            entry = self.doc["days"][day]
            entry.update(status="running", started_at=iso(self.clock()))
            entry.pop("error", None)
            self.doc["current_date"] = day
            self.doc["message"] = f"syncing {day} ({self.doc['progress_percent']:.1f}%)"
            self._save()

    def day_finished(self, day: str, outcome: DayOutcome, seconds: float) -> None:
        with self._lock:
            entry = self.doc["days"][day]
            entry.update(status=outcome.status, finished_at=iso(self.clock()),
                         seconds=round(seconds, 3))
            if outcome.rows is not None:
                entry["rows"] = outcome.rows
            if outcome.status == "failed":
                entry["error"] = outcome.message
                errors = self.doc["errors"]
                errors.append({"date": day, "error": outcome.message, "time": iso(self.clock())})
                del errors[:-MAX_ERRORS]
            if outcome.status == "success":
                self._durations.append(seconds)
                del self._durations[:-ETA_WINDOW]
            self._recount()
            self.doc["message"] = (f"{day}: {outcome.status}"
                                   f"{' — ' + outcome.message if outcome.message else ''}")
            self._save()

    def finish(self, status: str, message: str) -> None:
        with self._lock:
            now = self.clock()
            self.doc["status"] = status
            self.doc["end_time"] = iso(now)
            start = dt.datetime.fromisoformat(self.doc["start_time"])
            self.doc["duration_seconds"] = round((now - start).total_seconds(), 3)
            self.doc["current_date"] = None
            self.doc["estimated_completion"] = None
            self._recount()
            self.doc["message"] = message
            self._save()

    def _recount(self) -> None:
        recount(self.doc)
        self.doc["estimated_completion"] = self._eta(
            [e["status"] for e in self.doc["days"].values()])

    def _eta(self, states: list[str]) -> str | None:
        """Moving average of the recent days' durations × the days still to run."""
        if not self._durations:
            return None
        remaining = states.count("pending") + states.count("running")
        average = sum(self._durations) / len(self._durations)
        workers = max(1, int(self.doc.get("workers") or 1))
        seconds = average * remaining / workers
        return iso(self.clock() + dt.timedelta(seconds=seconds))
