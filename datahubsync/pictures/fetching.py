"""Step (2) of a pass: fetch every due file with ``workers`` threads, record the outcomes.

The worker threads only transfer; the pass's own thread alone talks to the
ledger: it tops the job queue up from ``due_files`` (skipping rows already in
flight or fetched but not yet recorded) and records outcomes in batches of
``RECORD_EVERY`` or every ``RECORD_SECONDS``. Our server refusing the token
stops the pass (exit 2) without counting an attempt against any file.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datahubsync.core.errors import ConfigError
from datahubsync.pictures.ledger import FileRow, Ledger, Outcome, RetryRules
from datahubsync.pictures.result import PassResult
from datahubsync.pictures.transfer import PathLocks, Transport, UnsafePath, local_path

log = logging.getLogger("datahubsync.pictures")
RECORD_EVERY = 200  # outcomes per ledger transaction
RECORD_SECONDS = 1.0
Key = tuple[str, int]


class ServerRefused(ConfigError):
    """Our picture server answered 401/403: every file would fail the same way, so the
    pass stops (exit 2) instead of spending attempts and backoff on each of them."""


@dataclass
class _Flight:
    """Where the pass's rows are: queued or being fetched, fetched but not recorded yet,
    outcomes waiting for the next ledger transaction."""

    in_flight: set[Key] = field(default_factory=set)
    unrecorded: set[Key] = field(default_factory=set)
    pending: list[Outcome] = field(default_factory=list)
    flushed: float = field(default_factory=time.monotonic)
    exhausted: bool = False  # the ledger has no more due rows for this pass
    refused: str | None = None  # our server refused the token


class DownloadPass:
    """One download step over the ledger's due files."""

    def __init__(self, cfg: Any, ledger: Ledger, rules: RetryRules, transport: Transport,
                 path_locks: PathLocks, heartbeat: Callable[[str], None],
                 clock: Callable[[], float]) -> None:
        self.cfg, self.ledger, self.rules = cfg, ledger, rules
        self.transport, self.path_locks = transport, path_locks
        self.heartbeat, self.clock = heartbeat, clock
        # rows a worker takes at once: a bundle's worth (http), one for legacy TCP
        self.per_request = max(1, cfg.bundle_files) if cfg.transport == "http" else 1
        self.low_water = cfg.workers * max(4, 2 * self.per_request)
        self.page = max(256, cfg.workers * max(64, 4 * self.per_request))

    def fetch(self, rows: list[FileRow]) -> list[tuple[Outcome, bool]]:
        """Transfer attempts (in a worker thread): each row's outcome, and whether it was
        skipped. Rows naming one destination twice are fetched one after the other."""
        done: list[tuple[Outcome, bool]] = []
        batch: list[tuple[FileRow, Path]] = []
        again: list[tuple[FileRow, Path]] = []
        taken: set[Path] = set()
        for row in rows:
            try:
                dest = local_path(self.cfg.local_root, row.remote)
            except UnsafePath as exc:
                done.append((Outcome(row, "error", error=str(exc)), False))
                continue
            (again if dest in taken else batch).append((row, dest))
            taken.add(dest)
        for group in ([batch] if batch else []) + [[item] for item in again]:
            with self.path_locks.hold_all([dest for _, dest in group]):
                fetched = self.transport.fetch_many([(row.remote, dest) for row, dest in group])
            done += [(Outcome(row, got.state, got.size, got.error), got.skipped)
                     for (row, _), got in zip(group, fetched, strict=True)]
        return done

    def run(self, result: PassResult) -> None:
        jobs: queue.SimpleQueue[FileRow | None] = queue.SimpleQueue()
        results: queue.SimpleQueue[tuple[Outcome, bool]] = queue.SimpleQueue()

        def work() -> None:
            try:
                take_jobs()
            finally:
                self.transport.release_thread()

        def take_jobs() -> None:
            last = False
            while not last and (row := jobs.get()) is not None:
                rows = [row]
                while len(rows) < self.per_request:  # what is queued already, up to a bundle
                    try:
                        more = jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:  # this thread's end: after these rows
                        last = True
                        break
                    rows.append(more)
                try:
                    for outcome in self.fetch(rows):
                        results.put(outcome)
                except Exception as exc:  # noqa: BLE001 - a bug must not lose the rows
                    for lost in rows:
                        results.put((Outcome(lost, "error", error=f"internal: {exc!r}"), False))

        threads = [threading.Thread(target=work, name=f"fetch-{i}", daemon=True)
                   for i in range(self.cfg.workers)]
        for thread in threads:
            thread.start()
        flight = _Flight()
        started = self.clock()  # files failing in this pass wait for the next one
        try:
            while True:
                self._top_up(flight, jobs, started)
                if not flight.in_flight:
                    break
                try:
                    self._take(flight, *results.get(timeout=RECORD_SECONDS), result)
                except queue.Empty:
                    pass
                self._record(flight, result)
        finally:
            if flight.pending:
                self.ledger.record(flight.pending, self.rules)
            for _thread in threads:
                jobs.put(None)
        if flight.refused is not None:
            raise ServerRefused(f"{self.cfg.server_url}: {flight.refused}; nothing was counted "
                                "as an attempt")

    def _top_up(self, flight: _Flight, jobs: queue.SimpleQueue[FileRow | None],
                started: float) -> None:
        if flight.exhausted or len(flight.in_flight) >= self.low_water:
            return
        busy = len(flight.in_flight) + len(flight.pending)  # taken, not yet in the ledger
        due = [r for r in self.ledger.due_files(self.page + busy, started)
               if (r.task_id, r.idx) not in flight.in_flight
               and (r.task_id, r.idx) not in flight.unrecorded]
        flight.exhausted = len(due) == 0
        for row in due:
            flight.in_flight.add((row.task_id, row.idx))
            jobs.put(row)

    def _take(self, flight: _Flight, outcome: Outcome, skipped: bool,
              result: PassResult) -> None:
        key = (outcome.row.task_id, outcome.row.idx)
        flight.in_flight.discard(key)
        if outcome.state == "refused":
            flight.refused, flight.exhausted = outcome.error, True  # no more jobs
            return
        flight.unrecorded.add(key)
        self._count(outcome, skipped, result)
        flight.pending.append(outcome)

    def _record(self, flight: _Flight, result: PassResult) -> None:
        if not flight.pending or not (len(flight.pending) >= RECORD_EVERY or not flight.in_flight
                                      or time.monotonic() - flight.flushed >= RECORD_SECONDS):
            return
        self.ledger.record(flight.pending, self.rules)
        flight.pending = []
        flight.unrecorded.clear()
        flight.flushed = time.monotonic()
        self.heartbeat(f"downloaded {result.downloaded}, failed {result.failed}")

    def _count(self, outcome: Outcome, skipped: bool, result: PassResult) -> None:
        row = outcome.row
        if outcome.state == "downloaded":
            if skipped:
                result.skipped += 1
            else:
                result.downloaded += 1
                result.bytes += outcome.size or 0
        elif outcome.state == "not_found" and row.not_found + 1 >= self.rules.missing_attempts:
            result.missing += 1
            log.warning("task %s: %s is missing on the server (recorded)", row.task_id,
                        row.remote)
        else:
            result.failed += 1
            message = f"task {row.task_id}: {row.remote}: {outcome.error}"
            if len(result.errors) < 10:
                result.errors.append(message)
            # A server that is down fails every file: the first few say why, the rest
            # go to debug, and the pass ends with one summary line.
            level = logging.WARNING if result.failed <= 10 else logging.DEBUG
            log.log(level, "%s (attempt %d)", message, row.attempts + 1)

