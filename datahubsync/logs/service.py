"""``logs once`` / ``run`` / ``status`` / ``stats``: the reader, queue and uploader together."""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datahubsync.core.config import LoadedConfig
from datahubsync.core.errors import ConfigError
from datahubsync.core.timeutil import iso_time
from datahubsync.logs.background import BackgroundUpload
from datahubsync.logs.queue import LogQueue
from datahubsync.logs.reader import Counts, ReadSettings, new_tokens, read_file
from datahubsync.logs.scan import open_scanner

log = logging.getLogger(__name__)


@dataclass
class Listing:
    """The matching files of ``log_dir``, re-listed at most every ``ttl`` seconds."""

    directory: Path
    pattern: str
    ttl: float
    clock: Callable[[], float] = time.monotonic
    _cached: list[Path] = field(default_factory=list)
    _at: float | None = None

    def files(self) -> list[Path]:
        now = self.clock()
        if self._at is None or now - self._at >= self.ttl:
            try:
                names = os.listdir(self.directory)
            except FileNotFoundError:
                raise ConfigError(f"logs.log_dir: {self.directory} does not exist") from None
            self._cached = sorted(self.directory / n for n in names
                                  if fnmatch.fnmatch(n, self.pattern))
            self._at = now
        return [p for p in self._cached if p.exists()]


def queue_path(loaded: LoadedConfig) -> Path:
    return loaded.state_dir / "logs" / "queue.db"


def open_queue(loaded: LoadedConfig) -> LogQueue:
    return LogQueue(queue_path(loaded))


def settings(cfg: Any) -> ReadSettings:
    return ReadSettings(cfg.botnet_type, cfg.dedupe, cfg.timestamp_source,
                        cfg.raw_line_prefix_chars, cfg.chunk_bytes, cfg.max_line_bytes,
                        cfg.stable_seconds, cfg.max_memory_ips, cfg.ip_regex)


@dataclass
class PassResult:
    files: int = 0
    lines: int = 0
    ips: int = 0
    queued: int = 0
    duplicates: int = 0
    uploaded: int = 0
    batches: int = 0
    pending: int = 0


def one_pass(loaded: LoadedConfig, queue: LogQueue, listing: Listing, uploader: Any,
             flush: bool, now: Callable[[], float] = time.time) -> PassResult:
    """Read every file's new lines, queue them, upload (all of it when ``flush``)."""
    cfg = loaded.config.logs
    read = settings(cfg)
    result = PassResult()
    if cfg.legacy_state_dir is not None and not queue.meta("legacy_adopted"):
        from datahubsync.logs.adopt import adopt_old_uploader

        for said in adopt_old_uploader(queue, cfg.legacy_state_dir):
            log.info("%s", said)
        queue.set_meta("legacy_adopted", "1")
    queue.merge_seen()  # rows a killed pass appended: its lookups go to the merged set
    scanner = open_scanner(new_tokens(read), cfg.scan_processes)  # may fork: before any thread
    background = None
    try:
        if uploader is not None:
            background = BackgroundUpload(uploader, queue.path, cfg.batch_size,
                                          cfg.force_upload_threshold)
        for path in listing.files():
            try:
                counts: Counts = read_file(path, queue, read, now(),
                                           background.poke if background else None, scanner)
            except FileNotFoundError:
                continue  # rotated away between listing and reading
            result.files += 1
            result.lines += counts.total("lines")
            result.ips += counts.total("ips")
            result.queued += counts.total("queued")
            result.duplicates += counts.total("dup_day") + counts.total("dup_global")
        queue.merge_seen()
    except BaseException:
        if background is not None:
            background.abandon()
        raise
    finally:
        scanner.close()
    if background is not None:
        try:
            background.finish(1 if flush else cfg.min_upload_batch)
        finally:
            result.uploaded, result.batches = background.records, background.batches
    queue.recount()
    result.pending = queue.depth()
    queue.set_meta("last_pass", str(now()))
    return result


def health(cfg: Any, pending: int, queue_mb: float, upload_errors: int = 0) -> tuple[str, int]:
    """healthy / warning / severe, and the exit code for each, from three inputs: records
    waiting (< 1 000 / 1 000-5 000 / > 5 000), their size (< 10 / 10-50 / > 50 MB) and
    uploads failed in a row (0 / 1-3 / > 3)."""
    if pending > cfg.health_pending_severe or queue_mb > cfg.health_queue_mb_severe \
            or upload_errors > 3:
        return "severe", 2
    if pending >= cfg.health_pending_warning or queue_mb >= cfg.health_queue_mb_warning \
            or upload_errors >= 1:
        return "warning", 1
    return "healthy", 0


def status(loaded: LoadedConfig, queue: LogQueue) -> dict[str, Any]:
    cfg = loaded.config.logs
    pending = queue.depth()
    pending_bytes = queue.pending_bytes()
    errors = int(queue.meta("upload_errors") or 0)
    state, code = health(cfg, pending, pending_bytes / 1e6, errors)
    files = queue.files()
    return {"health": state, "exit_code": code, "pending": pending,
            "pending_bytes": pending_bytes, "upload_errors": errors,
            "queue_file_bytes": queue.size_bytes(), "cached_ips": queue.cached_ips(),
            "incomplete_files": sum(1 for f in files if not f.done),
            "last_upload": iso_time(queue.meta("last_upload")),
            "last_pass": iso_time(queue.meta("last_pass")),
            "files": [{"path": f.path, "offset": f.offset, "done": f.done} for f in files]}


def pending_view(queue: LogQueue) -> dict[str, Any]:
    """What waits to be sent: how many records, their size, the oldest one."""
    oldest = queue.oldest_pending()
    return {"pending": queue.depth(), "pending_bytes": queue.pending_bytes(),
            "oldest": json.loads(oldest) if oldest else None}


def stats(queue: LogQueue) -> dict[str, Any]:
    days = queue.counters()
    names = ("lines", "ips", "queued", "dup_day", "dup_global", "dropped", "uploaded",
             "upload_failures")
    totals = {n: sum(d.get(n, 0) for d in days.values()) for n in names}
    ips = totals["ips"] or 1
    return {"totals": totals, "cached_ips": queue.cached_ips(),
            "dedupe_rate": round((totals["dup_day"] + totals["dup_global"]) / ips, 4),
            "per_day": [{"date": day, **{n: d.get(n, 0) for n in names}}
                        for day, d in sorted(days.items())]}


def run_service(loaded: LoadedConfig, uploader: Any) -> int:
    """``logs run``: a pass every ``logs.upload_interval`` until SIGTERM (``core.service``).

    A failed upload leaves its records queued for the next pass (the loop goes
    on and says so in STATUS); a refused key or source (401/403) stops it with
    exit 2, since retrying cannot fix it.
    """
    from datahubsync.core.errors import TempFailError
    from datahubsync.core.locking import hold_lock
    from datahubsync.core.report import ServiceReporter
    from datahubsync.core.service import Pass, ServiceLoop

    cfg = loaded.config.logs
    listing = Listing(cfg.log_dir, cfg.pattern, cfg.listing_ttl)

    def one() -> Pass:
        try:
            with open_queue(loaded) as queue:
                result = one_pass(loaded, queue, listing, uploader, flush=False)
        except TempFailError as exc:
            log.warning("%s", exc)
            return Pass(False, False, f"upload failing: {exc}", error=str(exc))
        with open_queue(loaded) as queue:
            health = status(loaded, queue)
        return Pass(bool(result.uploaded or result.queued), True,
                    f"queued {result.pending}, uploaded {result.uploaded}",
                    details={"logs": fleet_view(health)})

    with hold_lock(loaded.layout.logs_lock):
        reporter = ServiceReporter(loaded, "logs run", loaded.config.fleet.service_report_every)
        return ServiceLoop("logs", cfg.upload_interval, report=reporter).run(one)


def fleet_view(doc: dict[str, Any]) -> dict[str, Any]:
    """What the fleet view shows of this host's logs (from :func:`status`)."""
    return {k: doc[k] for k in ("health", "pending", "pending_bytes", "upload_errors",
                                "last_upload")}
