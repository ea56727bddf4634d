"""The hub's package store: ``{cache_dir}/{dataset}_{YYYYmmdd_HHMMSS}.zip`` plus a sidecar.

The sidecar (``<zip>.json``) records what the package holds and the data
version it represents; a package without a sidecar is not published, so a
reader never sees a half-written package. Both the builder and every server
worker read the store from disk, which is what lets several workers share it.

For a web server in front (``datahubsync serve nginx-config``), every publish
also points stable links at the current version: ``current/{dataset}.zip`` →
``../{dataset}_{version}.zip`` and ``current/{dataset}.manifest.json`` → its
manifest, each replaced atomically (a symlink under a temp name, then
``os.replace``), so such a server never sees a missing or half-made link.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datahubsync.core.crashpoint import CrashPoint
from datahubsync.core.statefile import created_mode, write_json_atomic
from datahubsync.datasets.delta import DeltaRecord
from datahubsync.datasets.packager import FileDigest

log = logging.getLogger(__name__)
SIDECAR = ".zip.json"
MANIFEST = ".manifest.json"
DELTA_SIDECAR = ".delta.json"
MANIFEST_FORMAT = 1
CURRENT_DIR = "current"  # stable links to the published version of each dataset
MANIFEST_WRITTEN = CrashPoint("hub.manifest_written", "a new version's manifest written, "
                              "its package still under the temp name")
PACKAGE_RENAMED = CrashPoint("hub.package_renamed", "a new package under its final name, "
                             "not yet published (no sidecar)")
PACKAGE_PUBLISHED = CrashPoint("hub.package_published", "a package's sidecar written: "
                               "published, older packages not yet pruned")
DELTA_RENAMED = CrashPoint("hub.delta_renamed", "a delta under its final name, no sidecar yet")


def manifest_document(record: PackageRecord, files: Sequence[FileDigest]) -> dict[str, Any]:
    """Per file of a version: path, size, mtime and sha256 (what delta sync checks against)."""
    return {
        "format": MANIFEST_FORMAT, "dataset": record.dataset, "version": record.version,
        "last_updated": record.last_updated, "file_count": len(files),
        "total_size": sum(f.size for f in files),
        "files": [{"path": f.path, "size": f.size, "mtime_ns": f.mtime_ns, "sha256": f.sha256}
                  for f in files],
    }


@dataclass(frozen=True)
class PackageRecord:
    """One published package of one dataset."""

    dataset: str
    version: str  # YYYYmmdd_HHMMSS, local time of the build
    file: str  # zip file name inside the store
    last_updated: str  # data version, hub-local ISO-8601 with offset
    newest_mtime_ns: int
    sha256: str
    size: int
    file_count: int
    total_size: int
    built_at: str
    signature: str  # digest of (path, size, mtime) of the files packed
    build_seconds: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PackageRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Published:
    """A record plus the file's stat, from which the HTTP ETag is derived."""

    record: PackageRecord
    path: Path
    etag: str  # same form aiohttp's FileResponse sends: mtime_ns-size, hex
    manifest: Path | None = None  # per-file sizes and digests (packages built since 0.2)
    deltas: tuple[DeltaRecord, ...] = ()  # from older versions to this one


def file_etag(st: os.stat_result) -> str:
    """The ETag ``serve`` sends for a file (aiohttp's FileResponse form)."""
    return f"{st.st_mtime_ns:x}-{st.st_size:x}"


class PackageStore:
    """Reads and writes the packages of every dataset in one directory."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)

    def records(self, dataset: str | None = None) -> list[PackageRecord]:
        """Published records, newest first (optionally of one dataset)."""
        found: list[PackageRecord] = []
        try:
            entries = list(os.scandir(self.cache_dir))
        except FileNotFoundError:
            return []
        for entry in entries:
            if not entry.name.endswith(SIDECAR) or entry.name.startswith("."):
                continue
            try:
                record = PackageRecord.from_json(json.loads(Path(entry.path).read_text("utf-8")))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("ignoring unreadable package sidecar %s: %s", entry.path, exc)
                continue
            if dataset is None or record.dataset == dataset:
                found.append(record)
        found.sort(key=lambda r: (r.dataset, r.version), reverse=True)
        return found

    def current(self) -> dict[str, Published]:
        """The newest package of each dataset whose zip is present."""
        newest: dict[str, Published] = {}
        for record in self.records():
            if record.dataset in newest:
                continue
            path = self.cache_dir / record.file
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            manifest = self.manifest_path(record.dataset, record.version)
            newest[record.dataset] = Published(
                record, path, file_etag(st), manifest if manifest.exists() else None,
                tuple(d for d in self.deltas(record.dataset, record.version)
                      if (self.cache_dir / d.file).exists()))
        return newest

    def deltas(self, dataset: str, to_version: str | None = None) -> list[DeltaRecord]:
        """Published deltas of a dataset (to one version), newest source first."""
        found = []
        for path in self.cache_dir.glob(f"{dataset}_*{DELTA_SIDECAR}"):
            try:
                delta = DeltaRecord.from_json(json.loads(path.read_text("utf-8")))
            except (OSError, ValueError, TypeError):
                continue
            if delta.dataset == dataset and to_version in (None, delta.to_version):
                found.append(delta)
        return sorted(found, key=lambda d: d.from_version, reverse=True)

    def commit_delta(self, temp_zip: Path, delta: DeltaRecord) -> None:
        """Publish a delta: the zip into place, then its sidecar."""
        final = self.cache_dir / delta.file
        os.replace(temp_zip, final)
        DELTA_RENAMED.reached()
        write_json_atomic(final.with_name(final.name[: -len(".zip")] + ".json"),
                          delta.to_json())

    def prune_deltas(self, dataset: str, current_version: str) -> None:
        """Deltas lead to the current version only; the others are useless now."""
        for delta in self.deltas(dataset):
            if delta.to_version == current_version:
                continue
            zip_path = self.cache_dir / delta.file
            for path in (zip_path.with_name(zip_path.name[: -len(".zip")] + ".json"),
                         zip_path):
                path.unlink(missing_ok=True)

    def manifest_path(self, dataset: str, version: str) -> Path:
        return self.cache_dir / f"{dataset}_{version}{MANIFEST}"

    def read_manifest(self, dataset: str, version: str) -> dict[str, Any] | None:
        """A version's manifest, or None when it has none (built before manifests)."""
        try:
            data = json.loads(self.manifest_path(dataset, version).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def temp_path(self, dataset: str, version: str) -> Path:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        return self.cache_dir / f".{dataset}_{version}.zip.{os.getpid()}.tmp"

    def commit(self, temp_zip: Path, record: PackageRecord, keep: int,
               files: Sequence[FileDigest] = ()) -> Path:
        """Publish a finished package: zip and manifest into place, then the sidecar.

        The sidecar is what publishes, so a published package always has its
        manifest (when ``files`` were given).
        """
        final = self.cache_dir / record.file
        if files:
            # served by nginx's workers, another user: the mode the package gets, not 0600
            write_json_atomic(self.manifest_path(record.dataset, record.version),
                              manifest_document(record, files), created_mode())
            MANIFEST_WRITTEN.reached()
        os.replace(temp_zip, final)
        PACKAGE_RENAMED.reached()
        write_json_atomic(final.with_name(final.name[: -len(".zip")] + SIDECAR), record.to_json())
        PACKAGE_PUBLISHED.reached()
        self._link_current_logged(record)
        self.prune(record.dataset, keep)
        self.prune_deltas(record.dataset, record.version)
        return final

    def current_links(self, dataset: str) -> tuple[Path, Path]:
        """The stable links of a dataset: its package and its manifest."""
        links = self.cache_dir / CURRENT_DIR
        return links / f"{dataset}.zip", links / f"{dataset}{MANIFEST}"

    def link_current(self, record: PackageRecord) -> None:
        """Point the stable links at ``record``'s package and manifest (atomically each).

        A version without a manifest removes the manifest link, which would
        otherwise name an older version's files.
        """
        package_link, manifest_link = self.current_links(record.dataset)
        package_link.parent.mkdir(exist_ok=True)
        _replace_symlink(package_link, f"../{record.file}")
        manifest = self.manifest_path(record.dataset, record.version)
        if manifest.exists():
            _replace_symlink(manifest_link, f"../{manifest.name}")
        else:
            manifest_link.unlink(missing_ok=True)

    def _link_current_logged(self, record: PackageRecord) -> None:
        try:
            self.link_current(record)
        except OSError as exc:  # serve itself publishes from the sidecars: keep going
            log.error("cannot update %s/%s.zip (a web server in front keeps serving the "
                      "previous version): %s", CURRENT_DIR, record.dataset, exc)

    def relink_current(self) -> None:
        """Make the stable links match what is published (a killed commit, an upgrade)."""
        links = self.cache_dir / CURRENT_DIR
        if links.is_dir():
            for entry in os.scandir(links):
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    os.unlink(entry.path)
        for published in self.current().values():
            self._link_current_logged(published.record)

    def prune(self, dataset: str, keep: int) -> None:
        """Keep the current package and ``keep`` older ones; delete the rest."""
        for old in self.records(dataset)[1 + keep :]:
            zip_path = self.cache_dir / old.file
            for path in (zip_path.with_name(zip_path.name[: -len(".zip")] + SIDECAR), zip_path,
                         self.manifest_path(old.dataset, old.version)):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            log.info("pruned old package %s", old.file)

    def remove_temp_files(self) -> None:
        """Drop temp files a killed build left behind; put the stable links right."""
        try:
            entries = list(os.scandir(self.cache_dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
        try:
            self.relink_current()
        except OSError as exc:
            log.error("cannot update the links in %s: %s", self.cache_dir / CURRENT_DIR, exc)


def _replace_symlink(link: Path, target: str) -> None:
    """``link`` → ``target``, replaced in one rename (readers see the old or the new one)."""
    try:
        if os.readlink(link) == target:
            return
    except OSError:
        pass
    temp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    temp.unlink(missing_ok=True)
    os.symlink(target, temp)
    os.replace(temp, link)
