"""``pictures once`` / ``run``: poll the task source, fetch due files in parallel, run the steps.

One pass: (1) the ``sql`` source adds new tasks to the ledger (its cursor
moving with them) and re-reads the lookback window; (2) every due file is
fetched by ``workers`` threads while the main thread records the outcomes in
batches; (3) tasks whose files are all settled go through ``process_command``
and ``callback_url`` when configured. Push tasks arrive through ``serve`` and
only need (2) and (3).

``run`` repeats passes every ``poll_interval`` (sooner when a retry falls
due), tells systemd ``READY=1`` and ``WATCHDOG=1`` after each healthy pass,
and exits non-zero when nothing has moved for ``stall_timeout`` while work was
waiting, so systemd restarts it (the old client restarted itself after 2 h without
a download; an idle source is healthy here, not a stall).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from datahubsync.core.config import LoadedConfig
from datahubsync.core.errors import ConfigError, TempFailError
from datahubsync.core.service import Pass
from datahubsync.pictures.ledger import FileRow, Ledger, Outcome, RetryRules, ledger_url
from datahubsync.pictures.sql_source import (
    CURSOR_NAME,
    Position,
    SqlSource,
    legacy_position,
    make_engine,
)
from datahubsync.pictures.transfer import (
    Fetched,
    HttpTransport,
    LegacyTcpTransport,
    PathLocks,
    Transport,
    UnsafePath,
    local_path,
)

log = logging.getLogger("datahubsync.pictures")
MAX_PAGES_PER_PASS = 200
RECORD_EVERY = 200  # outcomes per ledger transaction
RECORD_SECONDS = 1.0


class ServerRefused(ConfigError):
    """Our picture server answered 401/403: every file would fail the same way, so the
    pass stops (exit 2) instead of spending attempts and backoff on each of them."""


@dataclass
class PassResult:
    new_tasks: int = 0
    late_tasks: int = 0
    downloaded: int = 0
    skipped: int = 0
    missing: int = 0
    failed: int = 0
    bytes: int = 0
    processed: int = 0
    reported: int = 0
    step_failures: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def progressed(self) -> bool:
        return bool(self.new_tasks or self.downloaded or self.skipped or self.missing
                    or self.processed or self.reported)


def open_ledger(loaded: LoadedConfig, clock: Callable[[], float] = time.time) -> Ledger:
    return Ledger(ledger_url(loaded.config.pictures.ledger_url, loaded.state_dir), clock)


def make_transport(cfg: Any) -> Transport:
    if cfg.transport == "legacy-tcp":
        host = cfg.legacy_host
        if not host and cfg.server_url:
            from urllib.parse import urlsplit

            host = urlsplit(cfg.server_url).hostname
        if not host:
            raise ConfigError("pictures.legacy_host: required with transport: legacy-tcp")
        return LegacyTcpTransport(host, cfg.legacy_port, cfg.timeout, cfg.max_picture_bytes)
    if not cfg.server_url and cfg.source == "sql":
        raise ConfigError("pictures.server_url: required with transport: http "
                          "(e.g. http://picture-server:8080)")
    return HttpTransport(cfg.server_url, cfg.token, cfg.timeout, cfg.workers,
                         max_bytes=cfg.max_picture_bytes)


def make_source(cfg: Any) -> SqlSource | None:
    if cfg.source != "sql":
        return None
    if not cfg.database_url:
        raise ConfigError("pictures.database_url: required with source: sql "
                          "(e.g. oracle+oracledb://user@host:1521/?service_name=ORCL; "
                          "the password via DATAHUBSYNC_PICTURES__DATABASE_URL)")
    engine = make_engine(cfg.database_url, cfg.oracle_compat, cfg.oracle.lib_dir)
    return SqlSource(engine, cfg.table, cfg.created_column, cfg.id_column, cfg.image_columns,
                     cfg.batch_size, dt.timedelta(minutes=cfg.lookback_minutes))


class Worker:
    """The client's whole job; clock and sleep are injected so tests need not wait."""

    def __init__(self, loaded: LoadedConfig, ledger: Ledger, source: SqlSource | None,
                 transport: Transport, clock: Callable[[], float] = time.time,
                 heartbeat: Callable[[str], None] | None = None) -> None:
        self.cfg = loaded.config.pictures
        self.ledger = ledger
        self.source = source
        self.transport = transport
        self.clock = clock
        self.heartbeat = heartbeat or (lambda _status: None)
        self.path_locks = PathLocks()
        self.rules = RetryRules(self.cfg.retry_initial, self.cfg.retry_max,
                                self.cfg.give_up_after, self.cfg.missing_attempts)
        self._session: Any = None

    # --- (1) the source -----------------------------------------------------------------

    def _start_position(self) -> Position | None:
        stored = self.ledger.cursor(CURSOR_NAME)
        if stored is not None:
            return Position.load(stored)
        legacy = self.cfg.legacy_progress_file
        if legacy is not None:
            position = legacy_position(legacy)
            if position is not None:
                log.info("continuing from the old client's %s: after %s, task %s",
                         legacy, position.created, position.task_id)
                self.ledger.set_cursor(CURSOR_NAME, position.dump())
                return position
        return None

    def poll(self, result: PassResult) -> None:
        if self.source is None:
            return
        position = self._start_position()
        if position is not None and self.cfg.lookback_minutes > 0:
            result.late_tasks += self._lookback(position)
        for _ in range(MAX_PAGES_PER_PASS):
            new, last = self.source.fetch(position)
            if last is None:
                break
            result.new_tasks += self.ledger.add_tasks(new, (CURSOR_NAME, last.dump()))
            position = last
            if len(new) < self.source.batch_size:
                break

    def _lookback(self, position: Position) -> int:
        """Re-read the window before the cursor; the ledger keeps only tasks it lacks."""
        assert self.source is not None
        after = self.source.lookback_start(position)
        added = 0
        while after is not None:
            new, last = self.source.fetch(after, until=position)
            added += self.ledger.add_tasks(new)
            if last is None or len(new) < self.source.batch_size:
                break
            after = last
        if added:
            log.warning("%d task(s) committed late were found by the %g-minute lookback",
                        added, self.cfg.lookback_minutes)
        return added

    # --- (2) the files ------------------------------------------------------------------

    def _fetch(self, row: FileRow) -> tuple[Outcome, bool]:
        """One transfer attempt (in a worker thread): the outcome, and whether it was skipped."""
        try:
            dest = local_path(self.cfg.local_root, row.remote)
        except UnsafePath as exc:
            return Outcome(row, "error", error=str(exc)), False
        with self.path_locks.hold(dest):
            got: Fetched = self.transport.fetch(row.remote, dest)
        return Outcome(row, got.state, got.size, got.error), got.skipped

    def download_due(self, result: PassResult) -> None:
        """Fetch every due file: ``workers`` threads take rows from one queue.

        The main thread alone talks to the ledger: it tops the queue up from
        ``due_files`` (skipping rows already in flight) and records outcomes
        in batches of RECORD_EVERY or every RECORD_SECONDS.
        """
        jobs: queue.SimpleQueue[FileRow | None] = queue.SimpleQueue()
        results: queue.SimpleQueue[tuple[Outcome, bool]] = queue.SimpleQueue()

        def work() -> None:
            while (row := jobs.get()) is not None:
                try:
                    results.put(self._fetch(row))
                except Exception as exc:  # noqa: BLE001 - a bug must not lose the row
                    results.put((Outcome(row, "error", error=f"internal: {exc!r}"), False))

        threads = [threading.Thread(target=work, name=f"fetch-{i}", daemon=True)
                   for i in range(self.cfg.workers)]
        for thread in threads:
            thread.start()
        in_flight: set[tuple[str, int]] = set()  # queued or being fetched
        unrecorded: set[tuple[str, int]] = set()  # fetched, outcome not yet in the ledger
        low_water = self.cfg.workers * 4
        page = max(256, self.cfg.workers * 64)
        exhausted = False
        started = self.clock()  # files failing in this pass wait for the next one
        refused: str | None = None  # our server refused the token: stop, record nothing of it
        pending: list[Outcome] = []
        flushed = time.monotonic()
        try:
            while True:
                if not exhausted and len(in_flight) < low_water:
                    busy = len(in_flight) + len(pending)  # taken, not yet in the ledger
                    due = [r for r in self.ledger.due_files(page + busy, started)
                           if (r.task_id, r.idx) not in in_flight
                           and (r.task_id, r.idx) not in unrecorded]
                    exhausted = len(due) == 0
                    for row in due:
                        in_flight.add((row.task_id, row.idx))
                        jobs.put(row)
                if not in_flight:
                    break
                try:
                    outcome, skipped = results.get(timeout=RECORD_SECONDS)
                except queue.Empty:
                    outcome = None
                if outcome is not None and outcome.state == "refused":
                    in_flight.discard((outcome.row.task_id, outcome.row.idx))
                    refused, exhausted = outcome.error, True  # no more jobs; finish the rest
                elif outcome is not None:
                    key = (outcome.row.task_id, outcome.row.idx)
                    in_flight.discard(key)
                    unrecorded.add(key)
                    self._count(outcome, skipped, result)
                    pending.append(outcome)
                if pending and (len(pending) >= RECORD_EVERY or not in_flight
                                or time.monotonic() - flushed >= RECORD_SECONDS):
                    self.ledger.record(pending, self.rules)
                    pending = []
                    unrecorded.clear()
                    flushed = time.monotonic()
                    self.heartbeat(f"downloaded {result.downloaded}, failed {result.failed}")
        finally:
            if pending:
                self.ledger.record(pending, self.rules)
            for _thread in threads:
                jobs.put(None)
        if refused is not None:
            raise ServerRefused(f"{self.cfg.server_url}: {refused}; nothing was counted "
                                "as an attempt")

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

    # --- (3) processing and callback ----------------------------------------------------

    def run_steps(self, result: PassResult) -> None:
        cfg = self.cfg
        if cfg.process_command:
            for task_id, _attempts in self.ledger.due_tasks("downloaded"):
                self._process(task_id, result)
        elif cfg.callback_url:
            for task_id, _attempts in self.ledger.due_tasks("downloaded"):
                self.ledger.step_done(task_id, "processed", {"files": self._files(task_id)})
        if cfg.callback_url:
            for task_id, _attempts in self.ledger.due_tasks("processed"):
                self._callback(task_id, result)

    def _files(self, task_id: str) -> list[dict[str, Any]]:
        found = []
        for idx, remote, state in self.ledger.task_files(task_id):
            try:
                local = str(local_path(self.cfg.local_root, remote))
            except UnsafePath:
                local = None
            found.append({"index": idx, "remote": remote, "state": state, "local": local})
        return found

    def _process(self, task_id: str, result: PassResult) -> None:
        cfg = self.cfg
        info = self.ledger.task_info(task_id) or {}
        present = [f["local"] for f in self._files(task_id) if f["state"] == "downloaded"]
        values = {"task_id": task_id, "camera_id": info.get("camera_id") or "",
                  "created_time": info.get("created_time") or "",
                  "local_root": str(cfg.local_root)}
        argv: list[str] = []
        for arg in cfg.process_command or []:
            if arg == "{files}":
                argv.extend(present)
            else:
                argv.append(arg.format(**values))
        try:
            done = subprocess.run(argv, capture_output=True, timeout=cfg.process_timeout,
                                  check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self._step_failed(task_id, f"process_command timed out after "
                                       f"{cfg.process_timeout:g}s", result)
            return
        except OSError as exc:
            self._step_failed(task_id, f"process_command: {exc}", result)
            return
        if done.returncode != 0:
            tail = done.stderr.decode("utf-8", "replace").strip()[-300:]
            self._step_failed(task_id, f"process_command exited {done.returncode}: {tail}",
                              result)
            return
        text = done.stdout.decode("utf-8", "replace").strip()
        try:
            output: Any = json.loads(text) if text else None
        except ValueError:
            output = text[:4000]
        # a result the processing script reported through call_back meanwhile stays
        self.ledger.step_done(task_id, "processed", {"output": output},
                              from_state="downloaded")
        result.processed += 1

    def _report_body(self, task_id: str) -> dict[str, Any]:
        """What ``callback_url`` gets: for a picture of the existing sender, the fields it
        sent with its id and the script's ``numOfPeo``; for other tasks ours."""
        info = self.ledger.task_info(task_id) or {}
        found = json.loads(info["result"]) if info.get("result") else None
        if info.get("source") == "sender":
            files = self.ledger.task_files(task_id)
            return {"id": int(task_id), "photoUrl": files[0][1] if files else None,
                    "cameraCode": info.get("camera_id"), "callTime": info.get("created_time"),
                    "numOfPeo": found.get("numOfPeo") if isinstance(found, dict) else None}
        return {"task_id": task_id, "camera_id": info.get("camera_id"),
                "created_time": info.get("created_time"), "result": found,
                "files": self._files(task_id)}

    def _callback(self, task_id: str, result: PassResult) -> None:
        from datahubsync.core.http import post_json

        problem = post_json(self.session(), self.cfg.callback_url or "",
                            self._report_body(task_id), headers=self.cfg.callback_headers,
                            timeout=(10, self.cfg.timeout))
        if problem:
            self._step_failed(task_id, f"callback: {problem}", result)
            return
        self.ledger.step_done(task_id, "reported")
        result.reported += 1

    def session(self) -> Any:
        if self._session is None:
            from datahubsync.core.http import make_session

            self._session = make_session()
        return self._session

    def _step_failed(self, task_id: str, error: str, result: PassResult) -> None:
        log.warning("task %s: %s; retried in %gs", task_id, error, self.cfg.retry_after)
        result.step_failures += 1
        if len(result.errors) < 10:
            result.errors.append(f"task {task_id}: {error}")
        self.ledger.step_failed(task_id, error, self.cfg.retry_after, self.cfg.give_up_after)

    # --- passes -------------------------------------------------------------------------

    def one_pass(self) -> PassResult:
        result = PassResult()
        self.poll(result)
        self.download_due(result)
        if result.failed > 10:
            log.warning("%d transfers failed this pass (first: %s); they are retried with "
                        "backoff", result.failed, result.errors[0])
        self.run_steps(result)
        self.ledger.set_meta("last_pass", str(self.clock()))
        if result.downloaded or result.skipped:
            self.ledger.set_meta("last_download", str(self.clock()))
        return result

    def health(self) -> dict[str, Any]:
        """What the fleet view shows of this host's pictures: the backlog (files waiting),
        the files failing and given up, tasks waiting for a step, and the last pass."""
        counts = self.ledger.counts()
        files, tasks = counts["files"], counts["tasks"]
        return {"backlog": files.get("pending", 0) + files.get("failed", 0),
                "failed": files.get("failed", 0), "given_up": files.get("given_up", 0),
                "missing": files.get("missing", 0),
                "tasks_waiting": tasks.get("downloaded", 0) + tasks.get("processed", 0),
                "last_pass": self.clock()}

    def service_pass(self) -> Pass:
        """One pass as the service loop sees it (``core.service``)."""
        try:
            result = self.one_pass()
        except TempFailError as exc:
            log.warning("pass failed: %s", exc)
            return Pass(False, False, f"failing: {exc}", error=str(exc))
        waiting = self.ledger.next_file_due()
        return Pass(result.progressed, waiting is None,
                    f"downloaded {result.downloaded}, failed {result.failed}, new tasks "
                    f"{result.new_tasks}", next_in=self._pause(waiting),
                    error=result.errors[-1] if result.errors else None,
                    details={"pictures": self.health()})

    def _pause(self, next_due: float | None) -> float:
        """Until the next poll, or sooner when a failed file falls due (at least 1 s)."""
        if next_due is None:
            return self.cfg.poll_interval
        return min(self.cfg.poll_interval, max(1.0, next_due - self.clock()))


def status(ledger: Ledger, limit: int) -> dict[str, Any]:
    counts = ledger.counts()
    cursor = ledger.cursor(CURSOR_NAME)

    def when(key: str) -> str | None:
        value = ledger.get_meta(key)
        return (dt.datetime.fromtimestamp(float(value)).astimezone().isoformat(timespec="seconds")
                if value else None)

    return {"files": counts["files"], "tasks": counts["tasks"],
            "cursor": json.loads(cursor) if cursor else None,
            "last_pass": when("last_pass"), "last_download": when("last_download"),
            "problems": ledger.problems(limit), "task_problems": ledger.failed_tasks(limit)}
