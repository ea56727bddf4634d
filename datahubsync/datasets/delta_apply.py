"""Build the new version of a dataset from the installed one plus a delta.

The new tree is built beside the old one (the install's staging directory):
unchanged files are hard links to the installed ones, appended files are a
copy of the installed file plus the delta's tail, whole files come from the
delta. Every file of the new tree is then checked against the new version's
manifest (size and sha256), so a hand-edited local file, a corrupt delta or a
manifest mismatch is caught before the swap. The caller swaps the staging
directory in with the same journalled exchange as a full install.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datahubsync.core.errors import IntegrityError
from datahubsync.datasets.delta import CHUNK, DELTA_JSON, FORMAT


class LocalChanged(IntegrityError):
    """Installed files differ from the version the client believes it has."""

    def __init__(self, paths: list[str]) -> None:
        shown = ", ".join(paths[:5]) + (f" (+{len(paths) - 5} more)" if len(paths) > 5 else "")
        super().__init__(f"{len(paths)} local file(s) differ from the installed version: "
                         f"{shown}")
        self.paths = paths


@dataclass
class DeltaStats:
    """What a delta did (reported by ``datasets sync --json``)."""

    added: int = 0
    changed: int = 0
    appended: int = 0
    deleted: int = 0
    unchanged: int = 0


def safe_relpath(path: Any) -> str:
    """A manifest path we may create under a directory; IntegrityError otherwise."""
    if not isinstance(path, str) or not path or "\\" in path or "\0" in path:
        raise IntegrityError(f"unsafe path in manifest or delta: {path!r}")
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or ":" in parts[0]:
        raise IntegrityError(f"unsafe path in manifest or delta: {path!r}")
    return path


def read_delta_doc(delta_dir: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    try:
        doc = json.loads((delta_dir / DELTA_JSON).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"delta has no readable {DELTA_JSON}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IntegrityError(f"delta format {doc.get('format') if isinstance(doc, dict) else '?'}"
                             f" is not {FORMAT}")
    if doc.get("to") != manifest.get("version"):
        raise IntegrityError(f"delta leads to {doc.get('to')}, the manifest is of "
                             f"{manifest.get('version')}")
    return doc


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copy2(source, target)


def _append_copy(source: Path, tail: Path, target: Path, old_size: int) -> tuple[str, str, int]:
    """Copy ``source`` then ``tail`` into ``target``; returns (old sha, new sha, size)."""
    old_digest, new_digest = hashlib.sha256(), hashlib.sha256()
    size = 0
    with open(source, "rb") as src, open(target, "wb") as out:
        while size < old_size and (chunk := src.read(min(CHUNK, old_size - size))):
            old_digest.update(chunk)
            new_digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        if size != old_size or src.read(1):
            return "", "", size  # not the old size: the local file was changed
        with open(tail, "rb") as extra:
            while chunk := extra.read(CHUNK):
                new_digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    return old_digest.hexdigest(), new_digest.hexdigest(), size


def build_tree(local_dir: Path, delta_dir: Path, manifest: Mapping[str, Any], staging: Path,
               on_file: Callable[[str], None] | None = None) -> DeltaStats:
    """Fill ``staging`` with the new version; raises LocalChanged or IntegrityError."""
    doc = read_delta_doc(delta_dir, manifest)
    whole = {safe_relpath(p) for p in doc.get("whole", [])}
    appended = {safe_relpath(a["path"]): a for a in doc.get("appended", [])}
    stats = DeltaStats(deleted=len(doc.get("deleted", [])))
    changed_locally: list[str] = []
    made: set[Path] = set()
    for entry in manifest["files"]:
        rel = safe_relpath(entry["path"])
        target = staging / rel
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        source = local_dir / rel
        if rel in whole:
            os.replace(delta_dir / "whole" / rel, target)
            size, digest = _hash_file(target)
            if source.exists():
                stats.changed += 1
            else:
                stats.added += 1
        elif rel in appended:
            info = appended[rel]
            old_sha, digest, size = _append_copy(source, delta_dir / "append" / rel, target,
                                                 int(info["old_size"]))
            if old_sha != info["old_sha256"]:
                changed_locally.append(rel)
                continue
            stats.appended += 1
        else:
            if not source.is_file() or source.is_symlink():
                changed_locally.append(rel)
                continue
            _link_or_copy(source, target)
            size, digest = _hash_file(target)
            if (size, digest) != (entry["size"], entry["sha256"]):
                changed_locally.append(rel)
                continue
            stats.unchanged += 1
            if on_file is not None:
                on_file(rel)
            continue
        if (size, digest) != (entry["size"], entry["sha256"]):
            raise IntegrityError(f"{rel}: built from the delta, it does not match the "
                                 f"manifest (size {size}, expected {entry['size']})")
        os.utime(target, ns=(entry["mtime_ns"], entry["mtime_ns"]))
        if on_file is not None:
            on_file(rel)
    if changed_locally:
        raise LocalChanged(sorted(changed_locally))
    return stats
