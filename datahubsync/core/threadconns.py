"""Client connections kept per thread and per server, and all of them for ``close``.

Both fast HTTP clients (``core.keepalive.KeepAlivePool``, ``core.pipelined.PipelinedGets``)
keep one connection per fetch thread and server. They share the rules kept here: the
connect timeout defaults to the read timeout capped at 10 s, a thread that ends closes
its own connections (``release_thread``: ``pictures run`` starts new threads every pass
and leaked eight sockets a pass before), and ``close`` reaches every thread's.
"""

from __future__ import annotations

import threading
from typing import Generic, Protocol, TypeVar

from datahubsync import __version__


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)
Key = tuple[str, str]  # (scheme, netloc)


class ThreadConnections(Generic[C]):
    """The registry and timeouts of a per-thread client; subclasses open the connections
    and hand each to ``_keep``."""

    def __init__(self, timeout: float, connect_timeout: float | None = None,
                 user_agent: str | None = None) -> None:
        self.timeout = timeout
        self.connect_timeout = min(10.0, timeout) if connect_timeout is None else connect_timeout
        self.user_agent = user_agent or f"datahubsync/{__version__}"
        self._local = threading.local()  # per thread: {(scheme, netloc): connection}
        self._guard = threading.Lock()
        self._all: set[C] = set()

    def _mine(self) -> dict[Key, C]:
        """The calling thread's connections."""
        conns: dict[Key, C] | None = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        return conns

    def _keep(self, key: Key, conn: C) -> None:
        self._mine()[key] = conn
        with self._guard:
            self._all.add(conn)

    def _drop(self, key: Key) -> None:
        """Close and forget the calling thread's connection to ``key``, if it has one."""
        conn = self._mine().pop(key, None)
        if conn is not None:
            with self._guard:
                self._all.discard(conn)
            conn.close()

    def release_thread(self) -> None:
        """Close the calling thread's connections: a thread that ends must not leave them
        open for the life of the process."""
        for key in list(self._mine()):
            self._drop(key)

    def close(self) -> None:
        """Close every thread's connections."""
        with self._guard:
            conns, self._all = self._all, set()
        for conn in conns:
            conn.close()
