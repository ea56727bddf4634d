"""A small real TCP proxy for tests: cut responses mid-stream, throttle them, count bytes.

One daemon thread accepts; one daemon thread per connection moves bytes both
ways with ``select``. Settings are plain attributes, read whenever they
matter, so a test can change them between (or during) runs:

* ``cut_after``: after this many response bytes (server → client) on one
  connection, send nothing more and close the client side abruptly;
* ``max_cuts``: cut only that many connections (``None``: every connection
  that reaches ``cut_after``). Counting cuts rather than connections means a
  short response (the catalog) never uses up a cut;
* ``cut_mode``: ``"rst"`` (SO_LINGER 0: the client sees a reset) or ``"fin"``
  (an orderly close, the client sees a truncated body);
* ``rate``: bytes per second per connection, server → client (``None``: no limit).
"""

from __future__ import annotations

import contextlib
import fcntl
import select
import socket
import struct
import termios
import threading
import time
from urllib.parse import urlsplit

from tests.helpers import wait_until


class Proxy:
    def __init__(self, upstream_url: str, *, cut_after: int | None = None,
                 max_cuts: int | None = None, cut_mode: str = "rst",
                 rate: float | None = None) -> None:
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.cut_after = cut_after
        self.max_cuts = max_cuts
        self.cut_mode = cut_mode
        self.rate = rate
        self.connections = 0
        self.cuts = 0
        self.bytes_down = 0  # server -> client, all connections
        self.bytes_up = 0  # client -> server
        self.requests: list[str] = []  # request heads, as the client sent them
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._socks: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True).start()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset_counters(self) -> None:
        with self._lock:
            self.connections = self.cuts = self.bytes_down = self.bytes_up = 0
            self.requests.clear()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()

    # -- internals ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), name="proxy-conn",
                             daemon=True).start()

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._socks.update(socks)

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            self._abort(client)
            return
        self._track(upstream)
        with self._lock:
            self.connections += 1
        try:
            self._pump(client, upstream)
        except (OSError, ValueError):  # peer gone, or close() closed the sockets
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._socks.difference_update((client, upstream))

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        down = 0  # response bytes sent on this connection
        started: float | None = None  # first response byte, for the throttle
        head = b""  # request bytes not yet split into heads
        readable = [client, upstream]
        while readable and not self._closed.is_set():
            ready, _, _ = select.select(readable, [], [], 0.1)
            if client in ready:
                data = client.recv(65536)
                if not data:
                    readable.remove(client)
                    upstream.shutdown(socket.SHUT_WR)
                else:
                    with self._lock:
                        self.bytes_up += len(data)
                    head += data
                    while b"\r\n\r\n" in head:  # GET requests only: no bodies to skip
                        one, head = head.split(b"\r\n\r\n", 1)
                        with self._lock:
                            self.requests.append(one.decode("latin-1"))
                    upstream.sendall(data)
            if upstream in ready:
                rate = self.rate
                size = 65536 if not rate else max(1024, min(65536, int(rate / 20)))
                data = upstream.recv(size)
                if not data:
                    return  # server finished: close the client side normally
                cut = self._cut_point(down, len(data))
                if cut is not None:
                    if cut:
                        client.sendall(data[:cut])
                        self._count_down(cut)
                    self._abort(client)
                    return
                if started is None:
                    started = time.monotonic()
                client.sendall(data)
                down += len(data)
                self._count_down(len(data))
                if rate:
                    self._throttle(started + down / rate)

    def _cut_point(self, down: int, size: int) -> int | None:
        """How many of ``size`` new bytes to send before cutting, or None: no cut."""
        limit = self.cut_after
        if limit is None or down + size <= limit:
            return None
        with self._lock:
            if self.max_cuts is not None and self.cuts >= self.max_cuts:
                return None
            self.cuts += 1
        return max(0, limit - down)

    def _count_down(self, n: int) -> None:
        with self._lock:
            self.bytes_down += n

    def _throttle(self, until: float) -> None:
        while not self._closed.is_set():
            left = until - time.monotonic()
            if left <= 0 or not self.rate:
                return
            time.sleep(min(left, 0.05))

    def _abort(self, sock: socket.socket) -> None:
        if self.cut_mode == "rst":
            # A reset drops what is still in our send queue: wait until the client's
            # kernel has everything sent so far, so the cut point is exact.
            _wait_sent(sock)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()


def _wait_sent(sock: socket.socket, timeout: float = 2.0) -> None:
    """Wait until the socket's send queue is empty (Linux TIOCOUTQ), at most ``timeout``."""

    def sent() -> bool:
        try:
            return struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0] == 0
        except OSError:
            return True

    wait_until(sent, "the send queue to empty", timeout=timeout, interval=0.005, fail=False)
