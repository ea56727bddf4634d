"""Atomic install of a downloaded package into ``local_dir``, rollback and recovery.

``swap`` mode: extract into a hidden sibling directory, flush it to disk,
then exchange it with ``local_dir`` in one ``renameat2(RENAME_EXCHANGE)``
(two renames where that is unavailable). The old tree is kept as a hidden
sibling for ``rollback``. ``overlay`` mode: extract into the sibling, then
move file by file over ``local_dir`` (hard-linking each replaced file into a
backup first), leaving files the package does not contain alone.

A journal in the state directory is written before anything in ``local_dir``
moves; after a crash, ``recover`` finishes the interrupted step, so readers
see the old or the new complete dataset, never a mix.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from datahubsync.core.crashpoint import CrashPoint
from datahubsync.core.errors import DatahubsyncError
from datahubsync.core.fsutil import exchange, remove_tree, sync_filesystem
from datahubsync.core.statefile import read_json, write_json_atomic
from datahubsync.datasets.archive import ExtractLimits, extract_safe
from datahubsync.datasets.state import ClientState, InstalledVersion, InstallRecord

log = logging.getLogger(__name__)

STAGED = CrashPoint("install.staged", "the new tree is built and flushed beside local_dir")
JOURNAL_WRITTEN = CrashPoint("install.journal_written", "the journal is written, nothing moved")
AFTER_EXCHANGE = CrashPoint("install.after_exchange",
                            "new tree at local_dir, old one at the staging name")
FALLBACK_RENAMED = CrashPoint("install.fallback_renamed",
                              "two-rename fallback: a rename done (1st: local_dir missing)")
OVERLAY_FILE_MOVED = CrashPoint("install.overlay_file_moved", "overlay: one more file moved")
RECORDED = CrashPoint("install.recorded", "the install record names the new version")
STATE_SAVED = CrashPoint("install.state_saved", ".last_sync.json written, journal still there")
ROLLBACK_EXCHANGED = CrashPoint("rollback.after_exchange", "rollback: kept tree in place")


@dataclass(frozen=True)
class InstallRequest:
    name: str
    package: Path
    local_dir: Path
    mode: str  # "swap" | "overlay"
    keep_previous: int
    version: InstalledVersion
    limits: ExtractLimits
    fsync: bool = True
    extract_threads: int = 1  # see archive.extract_safe
    # hand the obsolete kept versions to ``fill`` (a delta recycles their files)
    # and delete what is left of them after it, instead of beside it
    reuse_obsolete: bool = False


def sibling(local_dir: Path, tag: str) -> Path:
    """A hidden directory beside ``local_dir`` (same filesystem: renames, hard links)."""
    stamp = dt.datetime.now().strftime("%Y%m%d%H%M%S%f")
    return local_dir.parent / f".{local_dir.name}.dhs-{tag}-{stamp}"


def _files_under(root: Path) -> list[str]:
    found: list[str] = []
    for base, _dirs, files in os.walk(root):
        for name in files:
            found.append(os.path.relpath(os.path.join(base, name), root))
    return sorted(found)


def remove_leftovers(name: str, local_dir: Path, tag: str) -> None:
    """Remove ``tag`` siblings an interrupted run left (no journal names them: recover ran
    first, under the lock)."""
    for leftover in local_dir.parent.glob(f".{local_dir.name}.dhs-{tag}-*"):
        log.info("%s: removing %s left by an interrupted install", name, leftover)
        remove_tree(leftover)


def install(state: ClientState, req: InstallRequest,
            progress: Callable[[int], None] | None = None) -> None:
    """Extract ``req.package`` and put it in place atomically; then record it."""
    install_tree(state, req,
                 lambda staging, _obsolete: extract_safe(req.package, staging, req.limits,
                                                         progress=progress,
                                                         threads=req.extract_threads))


def install_tree(state: ClientState, req: InstallRequest,
                 fill: Callable[[Path, list[Path]], object]) -> None:
    """Let ``fill`` build the new tree in a sibling directory, then swap it in (journalled).

    A full install extracts the package there; a delta install builds it from
    the installed tree plus the delta. ``fill`` also gets the kept versions this
    install makes obsolete (empty unless ``req.reuse_obsolete``): files it moves
    out of them are not deleted.
    """
    req.local_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(req.name, req.local_dir, "new")
    staging = sibling(req.local_dir, "new")
    staging.mkdir()
    with _dropping_obsolete(state, req) as obsolete:
        try:
            fill(staging, obsolete)
            if req.fsync:
                sync_filesystem(staging)
        except BaseException:
            remove_tree(staging)
            raise
        STAGED.reached()
        _commit(state, req, staging)


@contextmanager
def _dropping_obsolete(state: ClientState, req: InstallRequest) -> Iterator[list[Path]]:
    """Delete the kept versions this install makes obsolete while the new tree is built.

    Deleting a 600 MB tree costs as much as building the new one (the kernel
    drops its cached pages), so it runs beside the build instead of after the
    swap; with ``req.reuse_obsolete`` the build gets them first (it recycles
    their files) and what is left is deleted after it. The record forgets them
    first; if the install then fails, those older rollback points are gone but
    the installed version is untouched.
    """
    record = state.record(req.name)
    doomed = record.previous[max(req.keep_previous - 1, 0):] if record.current else []
    paths = [Path(p.path) for p in doomed if p.path]
    kept = {str(Path(p.path)) for p in record.previous if p.path} - {str(p) for p in paths}
    for orphan in req.local_dir.parent.glob(f".{req.local_dir.name}.dhs-prev-*"):
        if str(orphan) not in kept and orphan not in paths:
            paths.append(orphan)  # left by a run killed while deleting it
    if not paths:
        yield []
        return
    record.previous = record.previous[: max(req.keep_previous - 1, 0)]
    state.save_record(req.name, record)
    if req.reuse_obsolete:
        try:
            yield list(paths)
        finally:
            for path in paths:
                remove_tree(path)
        return
    worker = threading.Thread(target=lambda: [remove_tree(p) for p in paths],
                              name="dhs-drop-old", daemon=True)
    worker.start()
    try:
        yield []
    finally:
        worker.join()


def _commit(state: ClientState, req: InstallRequest, staging: Path) -> None:
    backup = sibling(req.local_dir, "prev")
    journal = {
        "mode": req.mode,
        "local_dir": str(req.local_dir),
        "staging": str(staging),
        "backup": str(backup),
        "new_inode": staging.stat().st_ino,
        "version": req.version.__dict__,
        "keep_previous": req.keep_previous,
    }
    write_json_atomic(state.journal_path(req.name), journal)
    JOURNAL_WRITTEN.reached()
    _apply(state, req.name, journal)


def recover(state: ClientState, name: str) -> bool:
    """Finish an install a crash interrupted; returns whether there was one."""
    journal = read_json(state.journal_path(name), None)
    if not isinstance(journal, dict):
        return False
    log.warning("%s: finishing an install that was interrupted", name)
    _apply(state, name, journal)
    return True


def _same(a: InstalledVersion | None, b: InstalledVersion) -> bool:
    return a is not None and (a.last_updated, a.sha256) == (b.last_updated, b.sha256)


def _apply(state: ClientState, name: str, journal: dict) -> None:
    """Finish the journalled step; safe to run again after a crash at any point in it."""
    if journal["mode"] == "rollback":
        _finish_rollback(state, name, journal)
        return
    local_dir = Path(journal["local_dir"])
    staging = Path(journal["staging"])
    backup = Path(journal["backup"])
    if journal["mode"] == "overlay":
        _overlay(staging, local_dir, backup)
    elif not _swap(staging, local_dir, backup, int(journal["new_inode"])):
        log.warning("%s: the interrupted install's new tree is gone; keeping %s as it is",
                    name, local_dir)
        state.journal_path(name).unlink(missing_ok=True)
        return
    remove_tree(staging)
    version = InstalledVersion(**journal["version"])
    record = state.record(name)
    if not _same(record.current, version):  # not recorded yet by an earlier attempt
        if record.current is not None and backup.exists():
            record.previous.insert(0, InstalledVersion(**{**record.current.__dict__,
                                                          "path": str(backup)}))
        record.current = version
        record.skip_last_updated = None
        keep = int(journal.get("keep_previous", 1))
        for old in record.previous[keep:]:
            if old.path:
                remove_tree(Path(old.path))
        record.previous = [p for p in record.previous[:keep]
                           if p.path and Path(p.path).exists()]
        state.save_record(name, record)
        RECORDED.reached()
    state.set_last_sync(name, version.last_updated)
    STATE_SAVED.reached()
    state.journal_path(name).unlink(missing_ok=True)


def _swap(staging: Path, local_dir: Path, backup: Path, new_inode: int) -> bool:
    """Put the new tree (inode ``new_inode``) at ``local_dir``, the old one at ``backup``.

    Returns False when the new tree no longer exists (nothing to finish).
    """
    if local_dir.exists() and local_dir.stat().st_ino == new_inode:
        if staging.exists():  # exchanged already: staging holds the old tree
            os.replace(staging, backup)
        return True
    if not staging.exists():
        if not local_dir.exists() and backup.exists():
            os.replace(backup, local_dir)  # put the old tree back
        return False
    if not local_dir.exists():
        os.replace(staging, local_dir)
        return True
    if exchange(staging, local_dir):
        AFTER_EXCHANGE.reached()
        os.replace(staging, backup)
    else:
        os.replace(local_dir, backup)
        FALLBACK_RENAMED.reached()
        os.replace(staging, local_dir)
        FALLBACK_RENAMED.reached()
    return True


def _overlay(staging: Path, local_dir: Path, backup: Path) -> None:
    """Move each staged file over ``local_dir``, hard-linking replaced files into ``backup``."""
    local_dir.mkdir(parents=True, exist_ok=True)
    if not staging.exists():
        return
    for rel in _files_under(staging):
        src, dest, saved = staging / rel, local_dir / rel, backup / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() and not saved.exists():
            saved.parent.mkdir(parents=True, exist_ok=True)
            os.link(dest, saved)
        os.replace(src, dest)
        OVERLAY_FILE_MOVED.reached()
    backup.mkdir(parents=True, exist_ok=True)


def rollback(state: ClientState, name: str, local_dir: Path, mode: str) -> InstallRecord:
    """Put the newest kept previous version back in place (journalled like an install)."""
    recover(state, name)
    record = state.record(name)
    if not record.previous or record.current is None:
        raise DatahubsyncError(f"{name}: no previous version is kept to roll back to")
    if mode == "overlay":
        raise DatahubsyncError(f"{name}: rollback is only supported in swap mode")
    target = record.previous[0]
    kept = Path(target.path or "")
    if not kept.is_dir() or not local_dir.is_dir():
        raise DatahubsyncError(f"{name}: previous version directory {kept} or {local_dir} "
                               "is missing")
    journal = {
        "mode": "rollback",
        "local_dir": str(local_dir),
        "kept": str(kept),
        "aside": str(sibling(local_dir, "prev")),
        "target_inode": kept.stat().st_ino,
        "target": target.__dict__,
        "rolled_from": record.current.__dict__,
    }
    write_json_atomic(state.journal_path(name), journal)
    if not exchange(kept, local_dir):
        os.replace(local_dir, journal["aside"])
        os.replace(kept, local_dir)
        os.replace(journal["aside"], kept)
    ROLLBACK_EXCHANGED.reached()
    _finish_rollback(state, name, journal)
    return state.record(name)


def _finish_rollback(state: ClientState, name: str, journal: dict) -> None:
    local_dir, kept, aside = (Path(journal[k]) for k in ("local_dir", "kept", "aside"))
    target = InstalledVersion(**{**journal["target"], "path": None})
    rolled_from = InstalledVersion(**{**journal["rolled_from"], "path": str(kept)})
    if not local_dir.exists() and aside.exists():  # fallback stopped after its 1st rename
        os.replace(kept, local_dir)
    in_place = local_dir.exists() and local_dir.stat().st_ino == journal["target_inode"]
    if in_place and aside.exists():
        os.replace(aside, kept)
    if not in_place:  # the exchange never happened: nothing changed on disk
        state.journal_path(name).unlink(missing_ok=True)
        return
    record = state.record(name)
    if not _same(record.current, target):
        record.current = target
        if record.previous:
            record.previous[0] = rolled_from
        else:
            record.previous = [rolled_from]
        record.skip_last_updated = rolled_from.last_updated
        state.save_record(name, record)
    state.set_last_sync(name, target.last_updated)
    state.journal_path(name).unlink(missing_ok=True)
