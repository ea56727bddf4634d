"""A scripted raw HTTP/1.1 server for the client's tests: it reads pipelined requests
and can close, cut, stall or lie at any answer."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator

from tests.helpers import serve_connections

HANG = b"<hang>"  # answer nothing, keep the connection open
ENDLESS = b"<endless header>"


class Cut(bytes):
    """Sent, then the connection is closed."""


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def body_of(path: str) -> bytes:
    return (path.encode() + b";") * 500


class Scripted:
    """Reads pipelined requests off each connection and answers each with
    ``reply(path, n)`` (``n``: answers already sent on that connection): bytes to send;
    a ``Cut`` is sent and the connection closed; None hangs up without an answer;
    ``HANG`` answers nothing and keeps the connection; ``ENDLESS`` sends headers that
    never end."""

    def __init__(self, reply: Callable[[str, int], bytes | None]) -> None:
        self.reply = reply
        self.connections = 0
        self.paths: list[str] = []
        self.queued: list[int] = []  # per answer: requests that had arrived behind it
        self.endless_sent = 0
        self.release = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        serve_connections(self.server, self._handle, threaded=True)

    def _handle(self, conn: socket.socket) -> None:
        self.connections += 1
        with conn, contextlib.suppress(OSError):  # the client may hang up first
            self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        buffer, answered = b"", 0
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            request, _, buffer = buffer.partition(b"\r\n\r\n")
            self.queued.append(buffer.count(b"\r\n\r\n"))  # read, not yet answered
            path = request.split(b"\r\n")[0].split()[1].decode()
            self.paths.append(path)
            out = self.reply(path, answered)
            if out is None:
                return
            if out == HANG:
                self.release.wait(60)
                return
            if out == ENDLESS:
                self._endless(conn)
                return
            conn.sendall(out)
            if isinstance(out, Cut):
                return
            answered += 1
            if b"Connection: close" in out.split(b"\r\n\r\n")[0]:
                return

    def _endless(self, conn: socket.socket) -> None:
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Endless: ")
            while self.endless_sent < 64 * 1024 * 1024:
                conn.sendall(b"a" * 65536)
                self.endless_sent += 65536
        except OSError:
            pass

    def close(self) -> None:
        self.release.set()
        self.server.close()


Make = Callable[[Callable[[str, int], bytes | None]], Scripted]


@contextlib.contextmanager
def scripted_servers() -> Iterator[Make]:
    """Start Scripted servers with the returned function; all closed at the end."""
    servers: list[Scripted] = []

    def make(reply: Callable[[str, int], bytes | None]) -> Scripted:
        servers.append(Scripted(reply))
        return servers[-1]

    try:
        yield make
    finally:
        for server in servers:
            server.close()


def open_sockets() -> int:
    """Sockets this process holds open (from /proc/self/fd)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except FileNotFoundError:  # the listing's own descriptor, closed by now
            pass
    return count
