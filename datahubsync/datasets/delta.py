"""Delta packages: from version A of a dataset to version B, only what changed.

A delta is a ZIP served like a package (Range, ETag, resume) holding:

- ``delta.json``: ``{"format", "dataset", "from", "to", "whole": [path...],
  "appended": [{"path", "old_size", "old_sha256"}...], "deleted": [path...]}``;
- ``whole/<path>``: files added, or changed other than by appending;
- ``append/<path>``: the bytes appended to a file whose new content starts
  with its old content (a new row at the end of a CSV: the daily case).

Files absent from all three lists are unchanged. The client checks the old
size and sha256 of every file it appends to, and every file of the new tree
against the new version's manifest, so a delta can never produce a tree the
hub did not publish. The content comes from the new *package* (not the data
directory, which may have moved on since), and a delta that would not save
enough against the full package is not published.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from datahubsync.datasets.deflate import DEFAULT_CODEC
from datahubsync.datasets.packager import build_zip, scan_dataset

log = logging.getLogger(__name__)
FORMAT = 1
DELTA_JSON = "delta.json"
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class DeltaRecord:
    """One published delta (the sidecar ``<dataset>_<from>-<to>.delta.json``)."""

    dataset: str
    from_version: str
    to_version: str
    file: str  # zip name inside the store
    size: int
    sha256: str
    whole: int
    appended: int
    deleted: int
    payload_bytes: int  # bytes of file content the delta carries

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeltaRecord:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class DeltaPlan:
    whole: list[str]
    appended: list[dict[str, Any]]
    deleted: list[str]


def plan_delta(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[dict, dict, list[str]]:
    """Index both manifests; returns (old by path, new by path, deleted paths)."""
    old_files = {f["path"]: f for f in old["files"]}
    new_files = {f["path"]: f for f in new["files"]}
    deleted = sorted(p for p in old_files if p not in new_files)
    return old_files, new_files, deleted


def build_delta(package: Path, old: Mapping[str, Any], new: Mapping[str, Any], dest: Path,
                work: Path, level: int, threads: int | None,
                codec: str = DEFAULT_CODEC) -> tuple[DeltaPlan, int, int]:
    """Write the delta from manifest ``old`` to ``new`` (whose package is ``package``).

    Returns the plan, the delta's size and the payload bytes. ``work`` is a
    scratch directory (removed afterwards).
    """
    old_files, new_files, deleted = plan_delta(old, new)
    whole: list[str] = []
    appended: list[dict[str, Any]] = []
    payload = 0
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        with zipfile.ZipFile(package) as zf:
            for path, entry in new_files.items():
                before = old_files.get(path)
                if before is not None and before["sha256"] == entry["sha256"]:
                    continue
                if before is not None and entry["size"] > before["size"]:
                    tail = _appended_tail(zf, path, before, work / "append" / path)
                    if tail is not None:
                        appended.append({"path": path, "old_size": before["size"],
                                         "old_sha256": before["sha256"]})
                        payload += tail
                        continue
                target = work / "whole" / path
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(path) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                whole.append(path)
                payload += entry["size"]
        doc = {"format": FORMAT, "dataset": new["dataset"], "from": old["version"],
               "to": new["version"], "whole": sorted(whole),
               "appended": sorted(appended, key=lambda a: a["path"]), "deleted": deleted}
        # a scratch file of the work directory, zipped with the rest; the zip is what is
        # written under a temp name and renamed when the delta is published
        (work / DELTA_JSON).write_text(json.dumps(doc, ensure_ascii=False), "utf-8")
        built = build_zip(work, scan_dataset(work), dest, level=level, threads=threads,
                          codec=codec)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return DeltaPlan(doc["whole"], doc["appended"], deleted), built.size, payload


def _appended_tail(zf: zipfile.ZipFile, path: str, before: Mapping[str, Any],
                   target: Path) -> int | None:
    """Write what was appended to ``path`` into ``target``; None if it was not an append."""
    digest = hashlib.sha256()
    remaining = int(before["size"])
    with zf.open(path) as src:
        while remaining:
            chunk = src.read(min(CHUNK, remaining))
            if not chunk:
                return None
            digest.update(chunk)
            remaining -= len(chunk)
        if digest.hexdigest() != before["sha256"]:
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
            return out.tell()


def delta_file_name(dataset: str, from_version: str, to_version: str) -> str:
    return f"{dataset}_{from_version}-{to_version}.delta.zip"


def temp_name(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
