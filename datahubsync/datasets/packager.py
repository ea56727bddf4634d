"""Build the ZIP "package" of a dataset directory, fast.

``zipfile`` compresses members one after another on one core and cannot accept
pre-compressed data, so this module deflates members in worker threads (zlib,
zlib-ng and isal all release the GIL) and writes the ZIP container itself,
sequentially and in order. The codec (``serve.compress_codec``, see deflate.py)
changes speed and size only: members are raw deflate streams either way.
The container format written here is deliberately small: file entries only, no
data descriptors (sizes are known before a header is written), ZIP64 only where
a field does not fit.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from datahubsync.core.cpus import usable_cpus
from datahubsync.datasets.deflate import DEFAULT_CODEC, compressor

log = logging.getLogger(__name__)

_TEMP_PREFIX = ".dhs-"  # our own temp files/dirs inside a dataset; never packaged
_CHUNK = 1 << 20  # read/copy size: large enough that zlib/hashlib calls drop the GIL
_SPOOL_MAX_SIZE = 16 << 20  # compressed member kept in memory up to this, then on disk
_ZIP64_LIMIT = 0xFFFFFFFF  # a 32-bit size/offset field at or above this needs ZIP64
_ENTRIES_LIMIT = 0xFFFF  # a 16-bit entry count at or above this needs ZIP64
_UTF8_FLAG = 0x800
_EXT_ATTR = 0o100644 << 16  # regular file, rw-r--r--: deterministic, umask-independent
_UNIX = 3 << 8  # "version made by" host byte: Unix, so _EXT_ATTR is honoured


@dataclass(frozen=True)
class PackageEntry:
    relpath: str  # posix, relative to root
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FileDigest:
    """What a manifest says of one packed file (as it was read, not as scanned)."""

    path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class BuiltPackage:
    path: Path
    size: int  # bytes of the zip
    sha256: str  # hex of the whole zip, computed while writing (no second read)
    file_count: int
    total_size: int  # sum of uncompressed sizes actually written
    files: tuple[FileDigest, ...] = ()  # per member, in archive order


@dataclass(frozen=True)
class _Member:
    """One compressed member, ready for the writer; ``spool`` holds exactly csize bytes."""

    method: int
    crc: int
    csize: int
    usize: int
    mtime_ns: int
    spool: tempfile.SpooledTemporaryFile[bytes]
    sha256: str = ""


def scan_dataset(root: Path) -> list[PackageEntry]:
    """Regular files under root, sorted by relpath.

    Symlinks are skipped (files and dirs) so a package never reaches outside the
    dataset; '.dhs-' names are our temp files (possibly the package being built).
    """
    found: list[PackageEntry] = []
    stack = [("", os.fspath(root))]
    while stack:
        prefix, path = stack.pop()
        with os.scandir(path) as it:
            for de in it:
                if de.name.startswith(_TEMP_PREFIX):
                    continue
                rel = prefix + de.name  # symlinks are neither dirs nor files below
                if de.is_dir(follow_symlinks=False):
                    stack.append((rel + "/", de.path))
                elif de.is_file(follow_symlinks=False):
                    st = de.stat(follow_symlinks=False)
                    found.append(PackageEntry(rel, st.st_size, st.st_mtime_ns))
    found.sort(key=lambda e: e.relpath)
    return found


def _compress(path: Path, codec: tuple[Callable[[], Any], Callable[..., int]]) -> _Member | None:
    """Deflate one file into a spool (runs in a worker); None if the file vanished.

    ``codec`` is deflate.compressor()'s (compress object factory, crc32).
    """
    try:
        f = open(path, "rb")  # closed by the with below
    except FileNotFoundError:
        return None
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MAX_SIZE)
    try:
        with f:
            mtime_ns = os.fstat(f.fileno()).st_mtime_ns
            new_compressor, crc32 = codec
            comp = new_compressor()
            crc = usize = 0
            first = b""
            digest = hashlib.sha256()  # for the manifest; ~1.7 GB/s, beside deflate's 46 MB/s
            while chunk := f.read(_CHUNK):
                first = first or chunk
                digest.update(chunk)
                crc = crc32(chunk, crc)
                usize += len(chunk)
                spool.write(comp.compress(chunk))
            spool.write(comp.flush())
        method, csize = 8, spool.tell()
        if usize == len(first) and csize >= usize:  # one chunk (or empty) and deflate didn't help
            spool.seek(0)
            spool.truncate()
            spool.write(first)
            method, csize = 0, usize
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return _Member(method, crc, csize, usize, mtime_ns, spool, digest.hexdigest())


def _dos_datetime(mtime_ns: int) -> tuple[int, int]:
    """(time, date) in DOS format, local time, clamped to the representable 1980..2107."""
    try:
        t = time.localtime(mtime_ns // 1_000_000_000)
        y, mo, d, h, mi, s = t[:6]
    except (OverflowError, OSError, ValueError):
        y, mo, d, h, mi, s = 2108, 1, 1, 0, 0, 0
    if y < 1980:
        y, mo, d, h, mi, s = 1980, 1, 1, 0, 0, 0
    elif y > 2107:
        y, mo, d, h, mi, s = 2107, 12, 31, 23, 59, 58
    return (h << 11) | (mi << 5) | (s // 2), ((y - 1980) << 9) | (mo << 5) | d


def _encode_name(relpath: str) -> tuple[bytes, int]:
    """Name bytes and flags; names that are not valid Unicode keep their raw bytes, no flag."""
    if relpath.isascii():
        return relpath.encode("ascii"), 0
    try:
        return relpath.encode("utf-8"), _UTF8_FLAG
    except UnicodeEncodeError:  # undecodable on-disk bytes (e.g. GBK names): pass them through
        log.warning("package: name %r is not valid UTF-8; stored as raw bytes", relpath)
        return relpath.encode("utf-8", "surrogateescape"), 0


def _zip64_extra(values: list[int]) -> bytes:
    return struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values) if values else b""


class _Out:
    """Output file that hashes and counts as it writes, so the zip is never re-read."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.sha, self.pos = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.sha.update(data)
        self.pos += len(data)


def _write_member(out: _Out, relpath: str, m: _Member, force64: bool) -> bytes:
    """Write local header + data; return the central directory record for it."""
    name, flags = _encode_name(relpath)
    dtime, ddate = _dos_datetime(m.mtime_ns)
    offset = out.pos
    local64 = force64 or m.usize >= _ZIP64_LIMIT or m.csize >= _ZIP64_LIMIT
    big = [v for v in (m.usize, m.csize, offset) if force64 or v >= _ZIP64_LIMIT]
    version = 45 if local64 or big else 20
    lx = _zip64_extra([m.usize, m.csize]) if local64 else b""
    lsizes = (0xFFFFFFFF, 0xFFFFFFFF) if local64 else (m.csize, m.usize)
    out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, version, flags, m.method, dtime, ddate,
                          m.crc, *lsizes, len(name), len(lx)) + name + lx)
    while chunk := m.spool.read(_CHUNK):
        out.write(chunk)
    cs, us, off = (0xFFFFFFFF if force64 or v >= _ZIP64_LIMIT else v
                   for v in (m.csize, m.usize, offset))
    cx = _zip64_extra(big)
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, _UNIX | version, version, flags,
                       m.method, dtime, ddate, m.crc, cs, us, len(name), len(cx), 0, 0, 0,
                       _EXT_ATTR, off) + name + cx


def _write_end(out: _Out, records: list[bytes], force64: bool) -> None:
    """Central directory, then ZIP64 end record + locator if anything overflows, then EOCD."""
    cd_offset, n = out.pos, len(records)
    for rec in records:
        out.write(rec)
    cd_size = out.pos - cd_offset
    n16 = 0xFFFF if force64 or n >= _ENTRIES_LIMIT else n
    size32, off32 = (0xFFFFFFFF if force64 or v >= _ZIP64_LIMIT else v
                     for v in (cd_size, cd_offset))
    if (n16, size32, off32) != (n, cd_size, cd_offset):
        eocd64 = out.pos
        out.write(struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, _UNIX | 45, 45, 0, 0, n, n,
                              cd_size, cd_offset))
        out.write(struct.pack("<IIQI", 0x07064B50, 0, eocd64, 1))
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n16, n16, size32, off32, 0))


def build_zip(root: Path, entries: Sequence[PackageEntry], dest: Path, *, level: int = 6,
              threads: int | None = None, codec: str = DEFAULT_CODEC,
              _force_zip64: bool = False) -> BuiltPackage:
    """Write a ZIP of ``entries`` (relative to root) to dest, flushed and fsynced.

    Members are deflated by ``threads`` workers at most 2*threads ahead of the
    writer (bounds memory), and written in entry order so the output is
    deterministic. ``codec`` is zlib, zlib-ng or isal (``level`` mapped to its range; zlib
    if it is not importable). A file gone since the scan is skipped; a resized one is written
    as read. On any error dest is removed, as a half-written zip is worthless.
    ``_force_zip64`` writes every ZIP64 record/field; it exists so tests can
    exercise them without multi-GiB data.
    """
    workers = max(1, threads or usable_cpus())
    deflate = compressor(codec, level)
    pending: deque[tuple[PackageEntry, Future[_Member | None]]] = deque()
    todo: Iterator[PackageEntry] = iter(entries)
    records: list[bytes] = []
    digests: list[FileDigest] = []
    total = 0
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="dhs-zip") as pool, \
                open(dest, "wb") as f:
            out = _Out(f)

            def refill() -> None:
                while len(pending) < 2 * workers and (e := next(todo, None)) is not None:
                    pending.append((e, pool.submit(_compress, root / e.relpath, deflate)))

            try:
                refill()
                while pending:
                    entry, fut = pending.popleft()
                    member = fut.result()
                    refill()
                    if member is None:
                        log.warning("package: %s vanished since scan; skipped", entry.relpath)
                        continue
                    with member.spool:
                        records.append(_write_member(out, entry.relpath, member, _force_zip64))
                    total += member.usize
                    digests.append(FileDigest(entry.relpath, member.usize, member.mtime_ns,
                                              member.sha256))
            finally:  # on error: stop queued work, release spools of finished work
                for _, fut in pending:
                    if not fut.cancel():
                        with suppress(Exception):
                            if (m := fut.result()) is not None:
                                m.spool.close()
            _write_end(out, records, _force_zip64)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with suppress(OSError):
            dest.unlink()
        raise
    return BuiltPackage(dest, out.pos, out.sha.hexdigest(), len(records), total,
                        tuple(digests))
