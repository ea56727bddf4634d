"""A bounded in-memory copy of small, often-read files, checked against a stat on every use.

Why: for a file of a few hundred KB, answering with aiohttp's FileResponse (open,
fstat, ``loop.sendfile``) costs the serving process far more than writing the
same bytes from memory, and a fleet's servers fetch the same new files (six
servers, the same day's pictures). Keeping the hottest ones in memory lets a
server answer most of those requests without opening the file.

Nothing stale is served: the caller hands in the ``lstat`` it made for this very
request (after its own confinement checks), and a copy is used only when the
file's identity and change stamps (device, inode, size, ``mtime_ns``,
``ctime_ns``) are those it was read with. A rewrite, a truncation, a ``chmod``,
a ``touch`` or a rename over the file changes at least one of them (``ctime``
moves on any of these, whatever the file's own times are set to). The bytes are
read from a descriptor opened with ``O_NOFOLLOW`` whose ``fstat`` must match the
caller's stat, so a file swapped between the two is not kept.

Bounds: ``max_bytes`` in all (least recently used copies leave first) and
``max_file_bytes`` per file; either 0 turns the cache off. Each process has its
own copy; a ``serve`` with N workers holds up to N × ``max_bytes``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

Stamp = tuple[int, int, int, int, int]
Meta = TypeVar("Meta")


class Copy(NamedTuple, Generic[Meta]):
    """A file's bytes and what the caller derived from it once (say, its headers)."""

    stamp: Stamp
    data: bytes
    meta: Meta


def stamp_of(st: os.stat_result) -> Stamp:
    """What must be unchanged for a copy to stand for the file."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class HotFiles(Generic[Meta]):
    """Copies of small files by path, least recently used evicted first.

    ``describe(path, st)`` runs once per copy read, so what a caller would
    otherwise work out on every use (a response's headers) is kept with it."""

    def __init__(self, max_bytes: int, max_file_bytes: int,
                 describe: Callable[[str, os.stat_result], Meta]) -> None:
        self.max_bytes = max(0, max_bytes)
        self.max_file_bytes = max(0, min(max_file_bytes, self.max_bytes))
        self.describe = describe
        self._copies: OrderedDict[str, Copy[Meta]] = OrderedDict()
        self.held = 0  # bytes held now
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_file_bytes > 0

    def __len__(self) -> int:
        return len(self._copies)

    def get(self, key: str, path: str, st: os.stat_result) -> Copy[Meta] | None:
        """The copy kept under ``key`` (the name asked for) of the file at ``path`` (where
        it resolved) as ``st`` describes it, from memory or read now. None when the
        file is too large for the cache, or changed or vanished while read: the
        caller then answers the way it does without a cache."""
        if st.st_size > self.max_file_bytes:
            return None
        stamp = stamp_of(st)
        held = self._copies.get(key)
        if held is not None:
            if held.stamp == stamp:
                self._copies.move_to_end(key)
                self.hits += 1
                return held
            self._drop(key)
        self.misses += 1
        data = _read_exactly(path, stamp)
        if data is None:
            return None
        copy = Copy(stamp, data, self.describe(key, st))
        self._keep(key, copy)
        return copy

    def _drop(self, key: str) -> None:
        self.held -= len(self._copies.pop(key).data)

    def _keep(self, key: str, copy: Copy[Meta]) -> None:
        while self._copies and self.held + len(copy.data) > self.max_bytes:
            self._drop(next(iter(self._copies)))  # the least recently used
        self._copies[key] = copy
        self.held += len(copy.data)


def _read_exactly(path: str, stamp: Stamp) -> bytes | None:
    """The file's bytes if the file opened is the one ``stamp`` describes, whole."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if stamp_of(os.fstat(fd)) != stamp:
            return None
        size = stamp[2]
        data = os.read(fd, size + 1) if size else b""
        while 0 < len(data) < size:  # a short read (not seen on local files): go on
            more = os.read(fd, size + 1 - len(data))
            if not more:
                break
            data += more
        if len(data) != size or stamp_of(os.fstat(fd)) != stamp:
            return None  # grew, shrank or was written to while read
        return data
    except OSError:
        return None
    finally:
        os.close(fd)
