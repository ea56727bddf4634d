"""Run, resume, cancel and list batch tasks.

A task is a job over a date range. It is planned into one unit per day
(non-trading days ``skipped`` up front), written to its progress document,
and executed under the target's lock. Every day's outcome is persisted as it
happens, so ``resume`` after a crash, kill -9 or ``cancel`` redoes only the
days that are not done. Cancelling (a request file, or SIGTERM/SIGINT) stops
the day in progress — its transaction rolls back, its command is stopped —
and starts no new day.
"""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datahubsync.batch.calendar import TradingCalendar, days_between, load_calendar
from datahubsync.batch.jobs import check_templates, kind_of
from datahubsync.batch.locks import file_target_lock, pg_target_lock
from datahubsync.batch.progress import (
    DONE,
    FINAL,
    Clock,
    DayOutcome,
    ProgressStore,
    Tracker,
    local_now,
    new_document,
    recount,
)
from datahubsync.batch.units import DayUnit
from datahubsync.core.config import LoadedConfig
from datahubsync.core.crashpoint import CrashPoint
from datahubsync.core.errors import ConfigError, LockedError, UsageError
from datahubsync.core.locking import process_alive

log = logging.getLogger(__name__)
OnChange = Callable[[dict[str, Any]], None]
CANCEL_POLL = 0.25
DAY_RECORDED = CrashPoint("batch.day_recorded", "a day's outcome saved in the task's progress")


@dataclass(frozen=True)
class Plan:
    """A validated request: which job, which days, how many at once."""

    job: str
    start: dt.date
    end: dt.date
    workers: int
    calendar: TradingCalendar


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class BatchService:
    """Everything the CLI and the API do with batch tasks, over one state directory."""

    def __init__(self, loaded: LoadedConfig, clock: Clock = local_now) -> None:
        self.loaded = loaded
        self.cfg = loaded.config.batch
        base = loaded.state_dir / "batch"
        self.store = ProgressStore(base / "tasks")
        self.lock_dir = base / "locks"
        self.clock = clock

    # -- planning -------------------------------------------------------------
    def job(self, name: str | None) -> tuple[str, Any]:
        name = name or self.cfg.default_job
        if not name:
            if len(self.cfg.jobs) == 1:
                name = next(iter(self.cfg.jobs))
            else:
                raise UsageError("job: name a job (configured: "
                                 f"{', '.join(sorted(self.cfg.jobs)) or 'none'})")
        if name not in self.cfg.jobs:
            raise UsageError(f"job: no job {name!r} in batch.jobs (configured: "
                             f"{', '.join(sorted(self.cfg.jobs)) or 'none'})")
        return name, self.cfg.jobs[name]

    def plan(self, job: str | None, start: dt.date, end: dt.date, workers: int | None = None,
             calendar: Path | None = None) -> Plan:
        """Validate a request; UsageError names the offending field."""
        name, cfg = self.job(job)
        check_templates(name, cfg)
        if end < start:
            raise UsageError(f"end_date: {end} is before start_date {start}")
        span = (end - start).days + 1
        if span > self.cfg.max_days:
            raise UsageError(f"end_date: the range covers {span} days, more than "
                             f"batch.max_days ({self.cfg.max_days})")
        cal = load_calendar(calendar or self.cfg.calendar)
        if not cal.covers(start, end):
            raise ConfigError(f"{cal.source}: the calendar lists no day between {start} and "
                              f"{end}; is it out of date?")
        return Plan(name, start, end, workers or self.cfg.workers, cal)

    def create(self, plan: Plan) -> dict[str, Any]:
        """Write the task's progress document (status ``pending``)."""
        now = self.clock()
        base = f"{plan.start}_{plan.end}_{int(now.timestamp())}_{plan.job}"
        task_id, n = base, 1
        while self.store.exists(task_id):
            n += 1
            task_id = f"{base}-{n}"
        days = {d.isoformat(): ("pending" if plan.calendar.is_trading_day(d) else "skipped")
                for d in days_between(plan.start, plan.end)}
        doc = new_document(task_id, plan.job, self.cfg.jobs[plan.job].kind, days, plan.start,
                           plan.end, plan.workers, now)
        doc["calendar"] = plan.calendar.source
        for entry in doc["days"].values():
            if entry["status"] == "skipped":
                entry["reason"] = "not a trading day"
        recount(doc)
        self.store.save(doc)
        return doc

    def dry_run(self, plan: Plan) -> list[dict[str, str]]:
        """What a run would do per day, touching nothing."""
        _, cfg = self.job(plan.job)
        unit = kind_of(cfg).build(plan.job, cfg)
        rows = []
        for day in days_between(plan.start, plan.end):
            if not plan.calendar.is_trading_day(day):
                rows.append({"date": day.isoformat(), "action": "skip",
                             "detail": "not a trading day"})
                continue
            describe = getattr(unit, "plan", None)
            detail = describe(day) if describe else "run"
            rows.append({"date": day.isoformat(), "action": "run", "detail": detail})
        return rows

    # -- running --------------------------------------------------------------
    def run(self, task_id: str, workers: int | None = None,
            on_change: OnChange | None = None) -> dict[str, Any]:
        """Execute (or continue) a task; returns its final document."""
        doc = self.store.load(task_id)
        if doc["status"] == "running":
            raise LockedError(f"task {task_id} is running (pid {doc.get('pid')} on "
                              f"{doc.get('host')})")
        if doc["status"] == "completed":
            return doc
        name, cfg = self.job(doc["job"])
        kind = kind_of(cfg)
        with self._target_lock(kind.target(name, cfg), cfg, task_id, name):
            # Read it again under the lock: another process may have run it meanwhile.
            doc = self.store.load(task_id)
            if doc["status"] in ("running", "completed"):
                return doc
            if workers:
                doc["workers"] = workers
            return self._execute(doc, kind.build(name, cfg), on_change)

    def resume(self, task_id: str, workers: int | None = None,
               on_change: OnChange | None = None) -> dict[str, Any]:
        """Continue a task with the first day not done (cancel requests are withdrawn)."""
        doc = self.store.load(task_id)
        if doc["status"] == "running":
            raise LockedError(f"task {task_id} is still running (pid {doc.get('pid')} on "
                              f"{doc.get('host')}); nothing to resume")
        self.store.clear_cancel(task_id)
        return self.run(task_id, workers, on_change)

    @contextmanager
    def _target_lock(self, target: str, job_cfg: Any, task_id: str,
                     job: str) -> Iterator[None]:
        if self.cfg.lock == "postgres":
            url = self.cfg.lock_url or getattr(job_cfg, "database_url", None)
            if not url:
                raise ConfigError("batch.lock is postgres but neither batch.lock_url nor the "
                                  f"job's database_url is set (job {job})")
            with pg_target_lock(url, target, task_id, job):
                yield
        else:
            with file_target_lock(self.lock_dir, target, task_id, job):
                yield

    def _execute(self, doc: dict[str, Any], unit: DayUnit,
                 on_change: OnChange | None) -> dict[str, Any]:
        task_id = doc["task_id"]
        tracker = Tracker(self.store, doc, self.clock)
        tracker.start()
        stop = threading.Event()
        why: dict[str, str] = {}
        done_watching = threading.Event()

        def watch_cancel() -> None:
            while not done_watching.wait(CANCEL_POLL):
                if self.store.cancel_requested(task_id):
                    why.setdefault("reason", "cancelled")
                    stop.set()
                    return

        def on_signal(signum: int, _frame: Any) -> None:
            why.setdefault("reason", "interrupted")
            stop.set()

        watcher = threading.Thread(target=watch_cancel, name="batch-cancel", daemon=True)
        watcher.start()
        if self.store.cancel_requested(task_id):
            why["reason"] = "cancelled"
            stop.set()
        todo = [day for day, entry in doc["days"].items() if entry["status"] not in DONE]
        total = doc["total"]
        log.info("batch task %s: job %s, %s to %s, %d days (%d to do, %d workers)", task_id,
                 doc["job"], doc["start_date"], doc["end_date"], total, len(todo),
                 doc["workers"])

        def one(day: str) -> None:
            tracker.day_started(day)
            started = time.monotonic()
            try:
                outcome = unit.run(dt.date.fromisoformat(day), stop)
            except Exception as exc:  # noqa: BLE001 - one day's failure never stops the rest
                log.debug("day %s failed", day, exc_info=True)
                outcome = DayOutcome("failed", f"{type(exc).__name__}: {exc}")
            seconds = time.monotonic() - started
            tracker.day_finished(day, outcome, seconds)
            DAY_RECORDED.reached()
            log.info("[%d/%d] %s: %s%s (%.1fs)", tracker.doc["current"], total, day,
                     outcome.status, f" — {outcome.message}" if outcome.message else "", seconds)
            if on_change:
                on_change(tracker.doc)

        with _stop_on_signals(on_signal):
            with ThreadPoolExecutor(max_workers=int(doc["workers"]),
                                    thread_name_prefix="batch-day") as pool:
                running: set[Future[None]] = set()
                for day in todo:
                    while len(running) >= int(doc["workers"]):
                        finished, running = wait(running, return_when=FIRST_COMPLETED)
                        for future in finished:
                            future.result()
                    if stop.is_set():
                        break
                    running.add(pool.submit(one, day))
                for future in running:
                    future.result()
        done_watching.set()
        watcher.join()
        close = getattr(unit, "close", None)
        if close is not None:
            close()
        status, message = self._final(tracker.doc, why.get("reason"))
        tracker.finish(status, message)
        log.info("batch task %s: %s", task_id, message)
        self.store.prune(self.cfg.keep_history)
        return tracker.doc

    def _final(self, doc: dict[str, Any], reason: str | None) -> tuple[str, str]:
        start = dt.datetime.fromisoformat(doc["start_time"])
        took = format_duration((self.clock() - start).total_seconds())
        counts = (f"{doc['success']} succeeded, {doc['failed']} failed, "
                  f"{doc['skipped']} skipped in {took}")
        if reason == "cancelled":
            return "cancelled", f"cancelled: {counts}; `batch resume {doc['task_id']}` goes on"
        if reason == "interrupted":
            return "interrupted", f"interrupted: {counts}; `batch resume {doc['task_id']}` goes on"
        if doc["failed"]:
            return "failed", f"done with failures: {counts}"
        return "completed", f"done: {counts}"

    # -- other commands ---------------------------------------------------------
    def cancel(self, task_id: str) -> dict[str, Any]:
        """Ask a running task to stop; a task with no live process is marked at once."""
        doc = self.store.load(task_id)
        if doc["status"] in ("completed", "cancelled"):
            return doc
        self.store.request_cancel(task_id)
        if doc["status"] == "running" and process_alive(doc.get("pid"), doc.get("pid_start")):
            return dict(doc, cancel_requested=True,
                        message=f"cancel requested; {doc.get('current_date') or 'the current day'}"
                                " finishes or rolls back, then the task stops")
        doc = dict(doc, status="cancelled", message="cancelled before it ran to the end",
                   end_time=doc.get("end_time") or self.clock().isoformat(timespec="seconds"))
        self.store.save(doc)
        return doc

    def status(self, task_id: str | None) -> dict[str, Any]:
        if task_id:
            return self._view(self.store.load(task_id))
        for doc in self.store.all():
            return self._view(doc)
        raise UsageError("no batch task has run yet (see `datahubsync batch run --help`)")

    def history(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Tasks newest first, without their per-day detail."""
        rows = []
        for doc in self.store.all():
            rows.append({k: v for k, v in self._view(doc).items() if k != "days"})
            if limit and len(rows) >= limit:
                break
        return rows

    def _view(self, doc: dict[str, Any]) -> dict[str, Any]:
        if doc["status"] not in FINAL and self.store.cancel_requested(doc["task_id"]):
            return dict(doc, cancel_requested=True)
        return doc


@contextmanager
def _stop_on_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """SIGTERM/SIGINT stop the task cleanly (main thread only; elsewhere a no-op)."""
    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
