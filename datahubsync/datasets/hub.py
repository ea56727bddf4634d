"""The hub's builder: scans dataset directories and publishes packages.

It runs beside the HTTP server (in a worker thread, so requests are never
blocked) and is also what ``datasets publish`` calls. The clock is injected
so the debounce logic is testable without sleeping.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datahubsync.core.metrics import Metrics
from datahubsync.core.timeutil import format_hub_time, from_timestamp_ns, parse_hub_time
from datahubsync.datasets.adopt import adopt_old_package
from datahubsync.datasets.delta import DeltaRecord, build_delta, delta_file_name, temp_name
from datahubsync.datasets.freshness import Decision, decide, signature
from datahubsync.datasets.packager import build_zip, scan_dataset
from datahubsync.datasets.store import PackageRecord, PackageStore, manifest_document

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildSettings:
    data_root: Path
    datasets: list[str] | None  # None: every visible sub-directory of data_root
    debounce: float
    newer_ratio: float
    keep_packages: int
    compress_level: int
    compress_threads: int | None
    tz: dt.tzinfo
    fresh_window: float | None = 86400.0  # seconds; files changed within it count as fresh
    keep_deltas: int = 2  # deltas built from this many previous versions
    max_delta_share: float = 0.5  # a delta larger than this share of the package is dropped
    outside_links: bool = False  # package a dataset dir that is a symlink out of data_root
    compress_codec: str = "zlib-ng"  # zlib, zlib-ng or isal (packager/deflate.py)


@dataclass
class _Pending:
    signature: str
    since: float


@dataclass
class Builder:
    """Decides and builds packages; one instance per hub process that builds."""

    settings: BuildSettings
    store: PackageStore
    metrics: Metrics | None = None
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _refused: set[str] = field(default_factory=set)  # said once, not every pass
    warnings: dict[str, str] = field(default_factory=dict)  # standing problems, for /health
    _said: dict[str, float] = field(default_factory=dict)
    _said_lock: threading.Lock = field(default_factory=threading.Lock)

    def _warn(self, key: str, message: str, every: float = 300.0) -> None:
        """Log a standing problem when it starts, then at most every ``every`` seconds
        (the catalog is re-read every second in every worker, and by the build thread
        and a request at the same moment: the check and the note are one step)."""
        with self._said_lock:
            now = self.clock()
            say = (self.warnings.get(key) != message
                   or now - self._said.get(key, -every) >= every)
            if say:
                self._said[key] = now
            self.warnings[key] = message
        if say:
            log.warning("%s", message)

    def dataset_names(self) -> list[str]:
        """Configured names, or the visible sub-directories of data_root."""
        if self.settings.datasets is not None:
            return list(self.settings.datasets)
        try:
            return sorted(
                e.name for e in os.scandir(self.settings.data_root)
                if e.is_dir(follow_symlinks=True) and not e.name.startswith(".")
            )
        except FileNotFoundError:
            self._warn("data_root", f"data_root {self.settings.data_root} does not exist: "
                                    "no dataset is scanned or built")
            return []
        finally:
            if self.settings.data_root.is_dir():
                self.warnings.pop("data_root", None)

    def run_once(self, force: bool = False) -> dict[str, Decision]:
        """One pass over every dataset; returns what was decided for each."""
        current = {r.dataset: r for r in (p.record for p in self.store.current().values())}
        outcome: dict[str, Decision] = {}
        for name in self.dataset_names():
            try:
                outcome[name] = self._check(name, current.get(name), force)
            except OSError as exc:
                log.error("dataset %s: cannot scan or build: %s", name, exc)
                outcome[name] = Decision(False, f"error: {exc}")
        return outcome

    def next_wakeup(self, interval: float) -> float:
        """Seconds until the next pass: sooner while a change is being debounced."""
        if not self._pending:
            return interval
        now = self.clock()
        due = min(p.since + self.settings.debounce for p in self._pending.values()) - now
        return max(0.05, min(interval, due))

    def _check(self, name: str, packaged: PackageRecord | None, force: bool) -> Decision:
        root = self.settings.data_root / name
        if not root.is_dir():
            return Decision(False, "no such directory")
        if root.is_symlink() and not self.settings.outside_links:
            target = root.resolve()
            if not target.is_relative_to(self.settings.data_root.resolve()):
                reason = (f"{root} is a symlink to {target}, outside data_root; not packaged "
                          "(set serve.dataset_links_outside: true to package it)")
                if name not in self._refused:
                    log.error("dataset %s: %s", name, reason)
                    self._refused.add(name)
                return Decision(False, reason)
        entries = scan_dataset(root)
        decision = decide(
            entries,
            packaged.signature if packaged else None,
            packaged.newest_mtime_ns if packaged else None,
            self.settings.newer_ratio,
            force,
            fresh_since_ns=(int((self.wall_clock() - self.settings.fresh_window) * 1e9)
                            if self.settings.fresh_window else None),
        )
        if not decision.build:
            self._pending.pop(name, None)
            if decision.reason != "unchanged":
                log.debug("dataset %s: not building: %s", name, decision.reason)
            return decision
        sig = signature(entries)
        if packaged is not None and not force and self.settings.debounce > 0:
            pending = self._pending.get(name)
            now = self.clock()
            if pending is None or pending.signature != sig:
                self._pending[name] = _Pending(sig, now)
                log.info("dataset %s: %s; waiting %.0fs for it to settle", name,
                         decision.reason, self.settings.debounce)
                return Decision(False, "debouncing: " + decision.reason)
            if now - pending.since < self.settings.debounce:
                return Decision(False, "debouncing: " + decision.reason)
        self._pending.pop(name, None)
        if packaged is None and adopt_old_package(self.store, name, root, entries,
                                                  self.settings.tz, self.settings.keep_packages):
            return Decision(True, "adopted the existing hub's package")
        self._build(name, root, entries, packaged)
        return decision

    def _build(self, name: str, root: Path, entries: list, packaged: PackageRecord | None) -> None:
        tz = self.settings.tz
        started = time.monotonic()
        now = dt.datetime.fromtimestamp(self.wall_clock(), tz)
        version = now.strftime("%Y%m%d_%H%M%S")
        if packaged is not None and version <= packaged.version:
            bumped = dt.datetime.strptime(packaged.version, "%Y%m%d_%H%M%S")
            version = (bumped + dt.timedelta(seconds=1)).strftime("%Y%m%d_%H%M%S")
        temp = self.store.temp_path(name, version)
        log.info("dataset %s: building package %s (%d files)", name, version, len(entries))
        try:
            built = build_zip(root, entries, temp, level=self.settings.compress_level,
                              threads=self.settings.compress_threads,
                              codec=self.settings.compress_codec)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        newest = max((e.mtime_ns for e in entries), default=0)
        data_time = from_timestamp_ns(newest, tz)
        if packaged is not None:
            # The data version must move forward even if no file got a newer mtime
            # (a deletion): clients compare it to decide whether to download.
            previous = parse_hub_time(packaged.last_updated, tz)
            if data_time <= previous:
                data_time = max(now, previous + dt.timedelta(microseconds=1))
        seconds = time.monotonic() - started
        record = PackageRecord(
            dataset=name,
            version=version,
            file=f"{name}_{version}.zip",
            last_updated=format_hub_time(data_time, tz),
            newest_mtime_ns=newest,
            sha256=built.sha256,
            size=built.size,
            file_count=built.file_count,
            total_size=built.total_size,
            built_at=format_hub_time(now, tz),
            signature=signature(entries),
            build_seconds=round(seconds, 3),
        )
        self._build_deltas(temp, record, manifest_document(record, built.files))
        self.store.commit(temp, record, self.settings.keep_packages, built.files)
        log.info("dataset %s: published %s (%d bytes, %.1fs)", name, record.file, built.size,
                 seconds)
        if self.metrics is not None:
            self.metrics.inc("datahubsync_packages_built_total", dataset=name)
            self.metrics.inc("datahubsync_package_build_seconds_total", seconds, dataset=name)
            self.metrics.set("datahubsync_package_last_build_seconds", seconds, dataset=name)

    def _build_deltas(self, package: Path, record: PackageRecord,
                      manifest: dict[str, Any]) -> None:
        """Deltas from the kept versions to ``record``, before it is published.

        They are in place when the new version appears in the catalog, so no
        client downloads the whole package for want of a delta. Any failure
        only costs the saving: the full package is always there.
        """
        if self.settings.keep_deltas <= 0:
            return
        for old in self.store.records(record.dataset)[: self.settings.keep_deltas]:
            previous = self.store.read_manifest(old.dataset, old.version)
            if previous is None:
                continue
            name = delta_file_name(record.dataset, old.version, record.version)
            temp = temp_name(self.store.cache_dir / name)
            work = self.store.cache_dir / f".delta-work-{os.getpid()}"
            try:
                plan, size, payload = build_delta(package, previous, manifest, temp, work,
                                                  self.settings.compress_level,
                                                  self.settings.compress_threads,
                                                  self.settings.compress_codec)
            except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
                log.warning("dataset %s: no delta from %s: %s", record.dataset, old.version,
                            exc)
                temp.unlink(missing_ok=True)
                continue
            if size > self.settings.max_delta_share * record.size:
                log.info("dataset %s: delta from %s is %d bytes, over %.0f%% of the package; "
                         "not published", record.dataset, old.version, size,
                         self.settings.max_delta_share * 100)
                temp.unlink(missing_ok=True)
                continue
            digest = hashlib.sha256()
            with open(temp, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
            self.store.commit_delta(temp, DeltaRecord(
                record.dataset, old.version, record.version, name, size, digest.hexdigest(),
                len(plan.whole), len(plan.appended), len(plan.deleted), payload))
            log.info("dataset %s: delta %s -> %s: %d bytes (%d whole, %d appended, %d "
                     "deleted)", record.dataset, old.version, record.version, size,
                     len(plan.whole), len(plan.appended), len(plan.deleted))
