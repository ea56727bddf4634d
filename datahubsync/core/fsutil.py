"""Filesystem primitives for atomic installs: directory exchange and syncfs."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE).

    Returns False where the kernel, libc or filesystem cannot do it; the
    caller then falls back to two renames guarded by its journal.
    """
    libc = _libc()
    func = getattr(libc, "renameat2", None) if libc is not None else None
    if func is None:
        return False
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def sync_filesystem(path: Path) -> None:
    """Flush the filesystem holding ``path`` (syncfs), so a swap never exposes unwritten files."""
    libc = _libc()
    func = getattr(libc, "syncfs", None) if libc is not None else None
    if func is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if func(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Delete a directory tree if present; log (not raise) what cannot be removed."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    shutil.rmtree(path, onerror=lambda f, p, e: log.warning("cannot remove %s: %s", p, e[1]))


def free_bytes(path: Path) -> int:
    """Free bytes for unprivileged users on the filesystem of ``path`` (or its parent)."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free
