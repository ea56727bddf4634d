"""One lock module for every long-running command, and one answer to "is that process alive".

Uses ``filelock`` (flock on Linux, so a lock dies with its process: kill -9
never leaves a stale lock). A side file, written atomically, records who holds
it (pid, host, since, the process's start time, and what the caller adds, such
as a batch task), so a second run's message names the holder and callers read
it from :class:`Held` instead of parsing messages.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from datahubsync.core.errors import LockedError
from datahubsync.core.statefile import read_json, write_json_atomic


class Held(LockedError):
    """Another run holds the lock; ``holder`` is what its side file says (may be empty)."""

    def __init__(self, message: str, holder: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.holder = dict(holder)


def process_start(pid: int) -> str | None:
    """Start time of ``pid`` in clock ticks (tells a live process from a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int | None, started: str | None) -> bool:
    """Whether process ``pid`` (started at ``started``, if known) still runs on this host."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or process_start(pid) in (None, started)


def info_path(path: Path) -> Path:
    return path.with_name(path.name + ".info")


def holder(path: Path) -> dict[str, Any]:
    """What the holder of the lock at ``path`` wrote about itself ({} when nothing)."""
    found = read_json(info_path(Path(path)), {})
    return found if isinstance(found, dict) else {}


def _holder_text(found: Mapping[str, Any]) -> str:
    if not {"pid", "host", "since"} <= set(found):
        return ""
    return f" (pid {found['pid']} on {found['host']} since {found['since']})"


@contextmanager
def hold_lock(path: Path, wait: float = 0.0,
              owner: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` or raise :class:`Held` (exit 75).

    ``wait`` is how many seconds to wait for another holder to finish; ``owner``
    is added to the holder record (e.g. the batch task running).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=wait)
    try:
        lock.acquire()
    except Timeout:
        found = holder(path)
        raise Held(f"another run holds {path}{_holder_text(found)}", found) from None
    try:
        write_json_atomic(info_path(path), {
            "pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "started": process_start(os.getpid()), **(owner or {})})
        yield
    finally:
        try:
            info_path(path).unlink()
        except OSError:
            pass
        lock.release()
