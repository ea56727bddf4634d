"""A client for the seed's picture protocol, written from its description only (DESIGN.md).

One request per connection: send a 4-byte big-endian length and the UTF-8
path; read a 4-byte big-endian name length, the name, an 8-byte big-endian
size and that many bytes. Name length 0 with size 0 is the error answer. Plain
blocking sockets, as the old ``client.py`` used: nothing here knows our server.
"""

from __future__ import annotations

import socket
import struct


class ShortAnswer(Exception):
    """The server closed the connection before the answer was complete."""


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    chunks, got = [], 0
    while got < count:
        chunk = sock.recv(min(count - got, 1 << 20))
        if not chunk:
            raise ShortAnswer(f"got {got} of {count} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def request_frame(path: str) -> bytes:
    data = path.encode("utf-8")
    return struct.pack(">I", len(data)) + data


def read_answer(sock: socket.socket) -> tuple[str, bytes] | None:
    """``(name, content)``, or None for the error answer."""
    (name_len,) = struct.unpack(">I", recv_exactly(sock, 4))
    name = recv_exactly(sock, name_len).decode("utf-8")
    (size,) = struct.unpack(">Q", recv_exactly(sock, 8))
    if name_len == 0 and size == 0:
        return None
    return name, recv_exactly(sock, size)


def fetch(port: int, path: str, host: str = "127.0.0.1",
          timeout: float = 20) -> tuple[str, bytes] | None:
    """Ask for one file on a new connection, as the old client did."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request_frame(path))
        return read_answer(sock)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (for byte-exact checks)."""
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
