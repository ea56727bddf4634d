"""``pictures once`` / ``run``: poll the task source, fetch due files in parallel, run the steps
(``pictures.steps``).

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
import time
from collections.abc import Callable
from typing import Any

from datahubsync.core.config import LoadedConfig
from datahubsync.core.errors import ConfigError, TempFailError
from datahubsync.core.service import Pass
from datahubsync.core.timeutil import iso_time
from datahubsync.pictures.fetching import DownloadPass
from datahubsync.pictures.ledger import Ledger, RetryRules, ledger_url
from datahubsync.pictures.result import PassResult
from datahubsync.pictures.sql_source import (
    CURSOR_NAME,
    Position,
    SqlSource,
    legacy_position,
    make_engine,
)
from datahubsync.pictures.steps import Steps
from datahubsync.pictures.transfer import (
    HttpTransport,
    LegacyTcpTransport,
    PathLocks,
    Transport,
)

log = logging.getLogger("datahubsync.pictures")
MAX_PAGES_PER_PASS = 200


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
                         max_bytes=cfg.max_picture_bytes, bundle_files=cfg.bundle_files)


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
        self.steps = Steps(self.cfg, ledger)

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

    def download_due(self, result: PassResult) -> None:
        """Fetch every due file (``pictures.fetching``)."""
        DownloadPass(self.cfg, self.ledger, self.rules, self.transport, self.path_locks,
                     self.heartbeat, self.clock).run(result)

    # --- passes -------------------------------------------------------------------------

    def one_pass(self) -> PassResult:
        result = PassResult()
        self.poll(result)
        self.download_due(result)
        if result.failed > 10:
            log.warning("%d transfers failed this pass (first: %s); they are retried with "
                        "backoff", result.failed, result.errors[0])
        self.steps.run(result)
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
        return iso_time(ledger.get_meta(key))

    return {"files": counts["files"], "tasks": counts["tasks"],
            "cursor": json.loads(cursor) if cursor else None,
            "last_pass": when("last_pass"), "last_download": when("last_download"),
            "problems": ledger.problems(limit), "task_problems": ledger.failed_tasks(limit)}
