"""Transfers cut short: a truncated picture is an error, never a file under its final name."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from datahubsync.pictures.transfer import HttpTransport, LegacyTcpTransport, local_path


@pytest.fixture
def liar() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server that answers each connection with the next canned reply, then hangs up."""
    replies: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(replies.pop(0))

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], replies
    server.close()


def test_truncated_http_body_is_an_error(tmp_path: Path, liar: tuple[int, list[bytes]]) -> None:
    port, replies = liar
    replies.append(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 500)
    dest = local_path(tmp_path, "D:\\pic\\a.jpg")
    got = HttpTransport(f"http://127.0.0.1:{port}", "t", 5).fetch("D:\\pic\\a.jpg", dest)
    assert got.state == "error" and not dest.exists()
    assert list(tmp_path.rglob("*")) in ([], [dest.parent])  # no temp file left


def test_truncated_legacy_frame_is_an_error(tmp_path: Path,
                                            liar: tuple[int, list[bytes]]) -> None:
    port, replies = liar
    name = b"a.jpg"
    replies.append(struct.pack(">I", len(name)) + name + struct.pack(">Q", 1000) + b"y" * 400)
    replies.append(struct.pack(">I", 0) + struct.pack(">Q", 0))  # the error frame
    dest = local_path(tmp_path, "D:\\pic\\a.jpg")
    transport = LegacyTcpTransport("127.0.0.1", port, 5)
    got = transport.fetch("D:\\pic\\a.jpg", dest)
    assert got.state == "error" and "truncated" in (got.error or "")
    assert not dest.exists() and not list(dest.parent.glob(".*.part"))
    assert transport.fetch("D:\\pic\\a.jpg", dest).state == "not_found"


def test_local_path_drops_the_drive_and_refuses_escapes(tmp_path: Path) -> None:
    assert local_path(tmp_path, "D:\\pic\\2025\\a.jpg") == tmp_path / "pic" / "2025" / "a.jpg"
    assert local_path(tmp_path, "/data/pic/a.jpg") == tmp_path / "data" / "pic" / "a.jpg"
    for bad in ("D:\\pic\\..\\..\\x", "\\\\host\\share\\x", "D:pic\\x", "rel\\x", ""):
        with pytest.raises(ValueError):
            local_path(tmp_path, bad)
