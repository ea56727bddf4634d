"""Watch directories for files being opened or read (Linux inotify through ctypes).

Used to prove that refused picture paths never reach a file outside the root:
``lstat`` makes no event, ``open`` and ``read`` do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from pathlib import Path
from types import TracebackType

IN_ACCESS, IN_OPEN, IN_NONBLOCK = 0x1, 0x20, 0o4000
_HEADER = struct.Struct("iIII")


class OpenWatch:
    """Context manager: ``events()`` lists ``(directory, name, mask)`` seen since entry."""

    def __init__(self, directories: list[Path]) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._dirs = directories
        self._fd = -1
        self._wd: dict[int, Path] = {}

    def __enter__(self) -> OpenWatch:
        self._fd = self._libc.inotify_init1(IN_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        for directory in self._dirs:
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory),
                                              IN_OPEN | IN_ACCESS)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {directory}")
            self._wd[wd] = directory
        return self

    def events(self) -> list[tuple[Path, str, int]]:
        found = []
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return found
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, size = _HEADER.unpack_from(data, offset)
                start = offset + _HEADER.size
                name = data[start:start + size].rstrip(b"\0").decode(errors="replace")
                found.append((self._wd.get(wd, Path("?")), name, mask))
                offset = start + size

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        os.close(self._fd)
