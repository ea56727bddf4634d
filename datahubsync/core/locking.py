"""One lock module for every long-running command.

Uses ``filelock`` (flock on Linux, so a lock dies with its process: kill -9
never leaves a stale lock). A side file records who holds it, so the message
a second run prints names the holder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from datahubsync.core.errors import LockedError


def _holder_text(info_path: Path) -> str:
    try:
        info = json.loads(info_path.read_text())
        return f" (pid {info['pid']} on {info['host']} since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


@contextmanager
def hold_lock(path: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` or raise LockedError (exit 75).

    ``wait`` is how many seconds to wait for another holder to finish.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info_path = path.with_name(path.name + ".info")
    lock = FileLock(str(path), timeout=wait)
    try:
        lock.acquire()
    except Timeout:
        raise LockedError(f"another run holds {path}{_holder_text(info_path)}") from None
    try:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        info_path.write_text(json.dumps(info))
        yield
    finally:
        try:
            info_path.unlink()
        except OSError:
            pass
        lock.release()
