"""Reuse the existing hub's packages when ``serve`` is pointed at its cache directory.

The existing hub writes ``{cache_dir}/{dataset}_{YYYYmmdd_HHMMSS}.zip`` (local
time) with no side file. At start, for a dataset with no package of ours, the
newest such zip is adopted instead of building one, when it is complete and
holds exactly the dataset as it is now:

- complete: the zip's central directory reads (the existing hub writes under
  the final name, and a half-written zip has none) and every member's CRC
  checks out;
- current: the same files with the same sizes, and each member's time within
  the two seconds a zip's timestamp can be off from the file's mtime.

Then its manifest (per-file sha256) and side file are written, and it is
published as is: old clients see the same bytes they may have downloaded
already. Anything else (half written, older data) is left alone and a package
is built as usual.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

from datahubsync.core.timeutil import format_hub_time, from_timestamp_ns
from datahubsync.datasets.freshness import signature
from datahubsync.datasets.packager import FileDigest, PackageEntry
from datahubsync.datasets.store import PackageRecord, PackageStore

log = logging.getLogger(__name__)
_OLD_NAME = re.compile(r"(?P<name>.+)_(?P<version>\d{8}_\d{6})\.zip")
ZIP_TIME_SLACK_NS = 2_000_000_000


def old_packages(store: PackageStore, dataset: str) -> list[Path]:
    """The existing hub's zips of ``dataset`` that have no side file of ours, newest first."""
    found = []
    for path in store.cache_dir.glob(f"{dataset}_*.zip"):
        match = _OLD_NAME.fullmatch(path.name)
        if match and match["name"] == dataset and not path.with_name(
                path.name[:-4] + ".zip.json").exists():
            found.append(path)
    return sorted(found, reverse=True)


def _matches(zf: zipfile.ZipFile, root: Path, entries: Sequence[PackageEntry],
             tz: dt.tzinfo) -> bool:
    members = {i.filename: i for i in zf.infolist() if not i.is_dir()}
    if set(members) != {e.relpath for e in entries}:
        return False
    for entry in entries:
        info = members[entry.relpath]
        if info.file_size != entry.size:
            return False
        stamp = dt.datetime(*info.date_time).replace(tzinfo=tz).timestamp() * 1e9
        if abs(stamp - entry.mtime_ns) > ZIP_TIME_SLACK_NS:
            return False
    return zf.testzip() is None


def _digests(root: Path, entries: Sequence[PackageEntry]) -> tuple[FileDigest, ...]:
    found = []
    for entry in entries:
        digest = hashlib.sha256()
        with open(root / entry.relpath, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        found.append(FileDigest(entry.relpath, entry.size, entry.mtime_ns, digest.hexdigest()))
    return tuple(found)


def adopt_old_package(store: PackageStore, dataset: str, root: Path,
                      entries: Sequence[PackageEntry], tz: dt.tzinfo,
                      keep: int) -> PackageRecord | None:
    """Publish the existing hub's newest complete, current package of ``dataset``."""
    for path in old_packages(store, dataset)[:1]:
        started = time.monotonic()
        try:
            with zipfile.ZipFile(path) as zf:
                if not _matches(zf, root, entries, tz):
                    log.info("dataset %s: %s is not the data as it is now; building anew",
                             dataset, path.name)
                    return None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            log.info("dataset %s: %s is not a complete zip (%s); building anew", dataset,
                     path.name, exc)
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        version = _OLD_NAME.fullmatch(path.name)["version"]  # type: ignore[index]
        newest = max((e.mtime_ns for e in entries), default=0)
        record = PackageRecord(
            dataset=dataset, version=version, file=path.name,
            last_updated=format_hub_time(from_timestamp_ns(newest, tz), tz),
            newest_mtime_ns=newest, sha256=digest.hexdigest(), size=path.stat().st_size,
            file_count=len(entries), total_size=sum(e.size for e in entries),
            built_at=format_hub_time(dt.datetime.fromtimestamp(path.stat().st_mtime, tz), tz),
            signature=signature(entries), build_seconds=0.0)
        store.commit(path, record, keep, _digests(root, entries))
        log.info("dataset %s: adopted the existing hub's %s (%.1fs to check)", dataset,
                 path.name, time.monotonic() - started)
        return record
    return None
