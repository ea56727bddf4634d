"""Wake a sleeping service loop from another process on the same host, instantly.

The loop (``pictures run``) binds a Unix datagram socket in its state
directory and sleeps in ``recv`` with its poll interval as the timeout; a
process that just stored work for it (``serve``, after a pushed picture or a
reported result is committed) sends one datagram. No server, no port: a
missing or stale socket only means the loop wakes at its next poll, as before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path


def poke(path: Path) -> bool:
    """Tell the loop listening at ``path`` that there is work; False when none listens."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(b"1", os.fspath(path))
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):  # already poked, not yet read
            return True
        return False


class Wakeup:
    """The listening side; ``sleep(seconds)`` returns early when poked."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.sock: socket.socket | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # left by a process that died; the lock says none runs
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(os.fspath(self.path))
            os.chmod(self.path, 0o660)
            self.sock = sock
        except OSError:
            self.sock = None  # e.g. a path longer than 107 bytes: polling only

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when woken by a poke."""
        if self.sock is None:
            import time

            time.sleep(max(0.0, seconds))
            return False
        self.sock.settimeout(max(0.001, seconds))
        try:
            self.sock.recv(16)
        except TimeoutError:
            return False
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while self.sock.recv(16):  # several pokes: one wake-up
                pass
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.sock = None
