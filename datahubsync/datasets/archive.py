"""Safe, fast extraction of dataset ZIP packages downloaded from a hub.

A package comes from the network, so its member names and sizes are untrusted.
Every member is validated *before* the first byte is written, so a hostile
archive leaves the (new, empty) destination untouched; the caller owns that
directory and deletes it on any error.  Contents are streamed with large
buffers and never decoded (the CSVs are GBK bytes), because extraction speed
must stay on par with ``unzip``.  Deflated members are inflated by isal or
zlib-ng when available (deflate.inflater()), inside zipfile's own reader, so its
local-header, CRC-32 and length checks all still apply.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import struct
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from datahubsync.core.crashpoint import CrashPoint
from datahubsync.core.errors import IntegrityError, UnsafeArchiveError
from datahubsync.datasets import deflate

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
CHECKED = CrashPoint("archive.checked", "every member of the archive checked, nothing extracted")
MEMBER_EXTRACTED = CrashPoint("archive.member_extracted", "one more member extracted to staging")
# Tiny members compress absurdly well (a file of 4 KiB of zeros) without any
# danger, so the ratio is only meaningful for members above this size.
RATIO_MIN_BYTES = 1024 * 1024
MAX_DEPTH = 128  # directories in a member's path: real data has two or three
MAX_NAME_BYTES = 255  # one path component, as on ext4/xfs
MAX_PATH_BYTES = 4096  # PATH_MAX
_SUPPORTED_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_DRIVE = re.compile(r"^[A-Za-z]:")
_UTF8_FLAG = 0x800
_UNIX = 3  # ZipInfo.create_system for archives made on Unix
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class ExtractLimits:
    """Ceilings that stop a zip bomb before it fills the disk."""

    max_total_bytes: int = 64 * 1024**3  # sum of uncompressed sizes
    max_ratio: float = 200.0  # per member, only above RATIO_MIN_BYTES
    max_members: int = 1_000_000
    max_member_bytes: int = 16 * 1024**3
    # What the hub announced for this package (None: not checked). The catalog of
    # our hub describes the package exactly; the existing hub's describes its folder
    # at request time, so only ours sets these.
    expect_files: int | None = None
    expect_bytes: int | None = None
    refuse_empty: bool = False  # an empty archive must not replace a dataset holding files


@dataclass(frozen=True)
class ExtractStats:
    """What was written: regular files and their bytes."""

    files: int
    bytes: int


def _unsafe(info: zipfile.ZipInfo, reason: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"unsafe archive member {info.orig_filename!r}: {reason}")


def _normalise(info: zipfile.ZipInfo) -> tuple[str, bool]:
    """Return (relative posix path, is_directory) or raise; backslash counts as '/'."""
    # ZipInfo cuts names at NUL, so the untruncated name is the one to inspect.
    raw = info.orig_filename
    if not info.flag_bits & _UTF8_FLAG:
        # Info-ZIP zip writes raw UTF-8 names without setting the flag, and
        # zipfile then decodes them as cp437; unzip on Linux keeps the bytes.
        try:
            raw = raw.encode("cp437").decode("utf-8")
        except UnicodeError:
            pass
    if "\0" in raw:
        raise _unsafe(info, "NUL byte in name")
    name = raw.replace("\\", "/")
    if name.startswith("/"):
        raise _unsafe(info, "absolute path")
    if _DRIVE.match(name):
        raise _unsafe(info, "drive letter")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _unsafe(info, "'..' path component")
    if not parts:
        raise _unsafe(info, "empty name")
    if len(parts) > MAX_DEPTH:
        raise _unsafe(info, f"{len(parts)} path components, limit {MAX_DEPTH}")
    path = "/".join(parts)
    if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES or any(
            len(p.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES for p in parts):
        raise _unsafe(info, f"name longer than {MAX_NAME_BYTES} bytes a component or "
                            f"{MAX_PATH_BYTES} in all")
    return path, name.endswith("/")


def _check_type(info: zipfile.ZipInfo, is_dir: bool) -> None:
    """Reject links and special files: only regular files and directories are data."""
    mode = info.external_attr >> 16
    fmt = stat.S_IFMT(mode)
    if fmt == stat.S_IFLNK:
        raise _unsafe(info, "symbolic link")
    if info.create_system == _UNIX and fmt not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise _unsafe(info, f"special file (mode {mode:#o})")
    if fmt == stat.S_IFDIR and not is_dir:
        raise _unsafe(info, "directory mode on a file name")
    if is_dir and info.file_size:
        raise _unsafe(info, "directory entry with data")


def _check(
    zf: zipfile.ZipFile, limits: ExtractLimits
) -> tuple[list[tuple[zipfile.ZipInfo, str]], list[tuple[zipfile.ZipInfo, str]]]:
    """Validate all members; return (file members with their paths, directory paths)."""
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise UnsafeArchiveError(f"archive has {len(infos)} members, limit {limits.max_members}")
    files: list[tuple[zipfile.ZipInfo, str]] = []
    dirs: list[tuple[zipfile.ZipInfo, str]] = []
    seen: set[str] = set()
    total = compressed = 0
    for info in infos:
        path, is_dir = _normalise(info)
        _check_type(info, is_dir)
        if path in seen:
            raise _unsafe(info, "duplicate name")
        seen.add(path)
        if is_dir:
            dirs.append((info, path))
            continue
        if info.flag_bits & 0x1:
            raise _unsafe(info, "encrypted")
        if info.compress_type not in _SUPPORTED_METHODS:
            raise _unsafe(info, f"unsupported compression method {info.compress_type}")
        if info.file_size > limits.max_member_bytes:
            raise _unsafe(info, f"{info.file_size} bytes, limit {limits.max_member_bytes}")
        if info.file_size > RATIO_MIN_BYTES:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_ratio:
                raise _unsafe(info, f"compression ratio {ratio:.0f}, limit {limits.max_ratio:g}")
        total += info.file_size
        compressed += info.compress_size
        if total > limits.max_total_bytes:
            raise _unsafe(info, f"total size exceeds {limits.max_total_bytes} bytes")
        files.append((info, path))
    # A name used both as a file and as a parent directory would fail mid-way.
    file_paths = {path for _, path in files}
    for info, path in files + dirs:
        parent = path.rpartition("/")[0]
        while parent:
            if parent in file_paths:
                raise _unsafe(info, f"parent {parent!r} is also a file")
            parent = parent.rpartition("/")[0]
    _check_totals(limits, len(files), total, compressed)
    CHECKED.reached()
    return files, dirs


def _check_totals(limits: ExtractLimits, count: int, total: int, compressed: int) -> None:
    """The archive as a whole: its ratio, and what the hub said it holds."""
    if total > RATIO_MIN_BYTES and total / max(compressed, 1) > limits.max_ratio:
        raise UnsafeArchiveError(f"archive expands {total / max(compressed, 1):.0f} times as a "
                                 f"whole ({total} bytes from {compressed}), limit "
                                 f"{limits.max_ratio:g}")
    if limits.expect_files is not None and count != limits.expect_files:
        raise UnsafeArchiveError(f"archive holds {count} files, the hub announced "
                                 f"{limits.expect_files}")
    if limits.expect_bytes is not None and total != limits.expect_bytes:
        raise UnsafeArchiveError(f"archive holds {total} bytes of files, the hub announced "
                                 f"{limits.expect_bytes}")
    if limits.refuse_empty and count == 0:
        raise UnsafeArchiveError("archive holds no file; it would empty a dataset that has "
                                 "files")


def check_archive(
    zf: zipfile.ZipFile, limits: ExtractLimits = ExtractLimits()
) -> list[zipfile.ZipInfo]:
    """Validate every member before anything is written; return the file members.

    Directory entries are validated too but not returned.  Names differing only
    in case are accepted: the target filesystem is case-sensitive.
    """
    return [info for info, _ in _check(zf, limits)[0]]


def _mtime(info: zipfile.ZipInfo) -> float | None:
    """ZIP timestamps are local wall-clock time with no zone, as unzip assumes."""
    try:
        return time.mktime((*info.date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdirs(dest_dir: Path, path: Path, made: set[Path]) -> None:
    """Create ``path`` and remember it (and its parents) to skip repeat syscalls."""
    if path in made:
        return
    path.mkdir(parents=True, exist_ok=True)
    while path != dest_dir and path not in made:
        made.add(path)
        path = path.parent


def _fast_inflate(src: BinaryIO) -> None:
    """Have zipfile's reader of a deflated member inflate with the fastest inflater.

    Only the decompress object is swapped (before the first read); zipfile still
    reads exactly compress_size bytes, checks the CRC-32 and the length at the end of
    the stream, and raises as before. ``_decompressor`` is private to zipfile: a reader
    without it (another Python, a test's stand-in) keeps zipfile's zlib.
    """
    if (isinstance(src, zipfile.ZipExtFile)
            and getattr(src, "_compress_type", None) == zipfile.ZIP_DEFLATED
            and hasattr(src, "_decompressor")):
        name, mod = deflate.inflater()
        if name != "zlib":
            src._decompressor = mod.decompressobj(-15)


def extract_member(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    target: Path,
    fsync: bool,
    progress: Callable[[int], None] | None,
) -> int:
    """Stream one member, refusing to write past its declared size."""
    fd = os.open(target, _OPEN_FLAGS, 0o666)
    with os.fdopen(fd, "wb") as out:
        written = 0
        try:
            with zf.open(info) as src:
                _fast_inflate(src)
                while chunk := src.read(CHUNK):
                    written += len(chunk)
                    if written > info.file_size:
                        raise _unsafe(info, f"data exceeds declared size {info.file_size}")
                    out.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
        except (zipfile.BadZipFile, *deflate.errors(), EOFError, NotImplementedError) as exc:
            raise IntegrityError(f"corrupt archive member {info.orig_filename!r}: {exc}") from exc
        if written != info.file_size:
            raise IntegrityError(
                f"archive member {info.orig_filename!r}: {written} bytes, declared {info.file_size}"
            )
        out.flush()
        if fsync:
            os.fsync(out.fileno())
        mtime = _mtime(info)
        if mtime is not None:
            os.utime(out.fileno(), (mtime, mtime))
    return written


def open_archive(source: Path | BinaryIO, label: str | None = None) -> zipfile.ZipFile:
    """Open a zip archive from a peer; IntegrityError (one line) when it is not one."""
    try:
        return zipfile.ZipFile(source)
    # ValueError covers names flagged UTF-8 that are not; struct.error truncated records.
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, struct.error,
            NotImplementedError, OverflowError) as exc:
        raise IntegrityError(f"{label or source}: not a valid zip archive: {exc}") from None


def extract_safe(
    zip_path: Path,
    dest_dir: Path,
    limits: ExtractLimits = ExtractLimits(),
    *,
    fsync: bool = False,
    progress: Callable[[int], None] | None = None,
    threads: int = 1,
) -> ExtractStats:
    """Extract ``zip_path`` into the new, empty ``dest_dir`` after checking it all.

    ``threads`` > 1: members are inflated and written by that many threads, each
    with its own handle on the archive (inflate and write release the GIL, so a
    second core does half the work; unzip uses one). Raises UnsafeArchiveError or
    IntegrityError (the first one any thread met; the others stop at their next
    member); on error the caller removes ``dest_dir`` (partially written files may
    remain in it).
    """
    with open_archive(zip_path) as zf:
        files, dirs = _check(zf, limits)
        log.debug("extracting %d files from %s into %s", len(files), zip_path, dest_dir)
        made: set[Path] = {dest_dir}
        for _, rel in dirs:
            _mkdirs(dest_dir, dest_dir / rel, made)
        for _, rel in files:  # every directory first: the threads only create files
            _mkdirs(dest_dir, (dest_dir / rel).parent, made)
        if threads > 1 and len(files) >= 2 * threads:
            total = _extract_in_threads(zip_path, files, dest_dir, fsync, progress, threads)
        else:
            total = _extract_list(zf, files, dest_dir, fsync, progress, threading.Event())
    if fsync:
        for path in sorted(made, key=lambda p: len(p.parts), reverse=True):
            _fsync_dir(path)
    log.info("extracted %d files (%d bytes) from %s", len(files), total, zip_path)
    return ExtractStats(files=len(files), bytes=total)


Members = list[tuple[zipfile.ZipInfo, str]]


def _extract_list(zf: zipfile.ZipFile, files: Members, dest_dir: Path, fsync: bool,
                  progress: Callable[[int], None] | None, stop: threading.Event) -> int:
    total = 0
    for info, rel in files:
        if stop.is_set():
            break
        total += extract_member(zf, info, dest_dir / rel, fsync, progress)
        MEMBER_EXTRACTED.reached()
    return total


def _extract_in_threads(zip_path: Path, files: Members, dest_dir: Path, fsync: bool,
                        progress: Callable[[int], None] | None, threads: int) -> int:
    """Members dealt out largest first to the least loaded thread (by bytes)."""
    shares: list[Members] = [[] for _ in range(threads)]
    loads = [0] * threads
    for member in sorted(files, key=lambda m: m[0].file_size, reverse=True):
        least = loads.index(min(loads))
        shares[least].append(member)
        loads[least] += member[0].file_size
    lock = threading.Lock()
    counted: Callable[[int], None] | None = None
    if progress is not None:
        report = progress

        def counted(amount: int) -> None:
            with lock:
                report(amount)

    stop = threading.Event()
    totals: list[int] = []
    errors: list[BaseException] = []

    def work(share: Members) -> None:
        try:
            with open_archive(zip_path) as own:
                totals.append(_extract_list(own, share, dest_dir, fsync, counted, stop))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
            stop.set()

    workers = [threading.Thread(target=work, args=(share,), name=f"dhs-extract-{n}",
                                daemon=True) for n, share in enumerate(shares)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return sum(totals)
