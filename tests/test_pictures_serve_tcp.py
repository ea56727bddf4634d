"""The legacy TCP picture protocol in a real ``serve``, byte by byte, with raw sockets.

The client (tests/legacy_picture_client.py) is written from the protocol's
description only; the exact bytes on the wire are checked too.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.legacy_picture_client import fetch, read_all, read_answer, request_frame
from tests.pictures_serve_kit import PictureHub, start_picture_hub

A = "D:\\pic\\2025\\10\\01\\a.jpg"
ERROR = bytes(12)


@pytest.fixture
def pics(tmp_path: Path) -> Iterator[PictureHub]:
    server = start_picture_hub(tmp_path, legacy={"max_path_bytes": 512})
    try:
        yield server
    finally:
        server.hub.stop()


def connect(pics: PictureHub, timeout: float = 20) -> socket.socket:
    return socket.create_connection(("127.0.0.1", pics.tcp_port), timeout=timeout)


def exchange(pics: PictureHub, payload: bytes, half_close: bool = False) -> bytes:
    with connect(pics) as sock:
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


def test_success_bytes_on_the_wire(pics: PictureHub) -> None:
    data = pics.tree.files[A]
    answer = exchange(pics, request_frame(A))
    assert answer == struct.pack(">I", 5) + b"a.jpg" + struct.pack(">Q", len(data)) + data
    for path, content in pics.tree.files.items():
        name = path.rsplit("\\", 1)[1]
        assert fetch(pics.tcp_port, path) == (name, content), path
    assert fetch(pics.tcp_port, "d:/pic/2025/10/01/中文.jpg") == (
        "中文.jpg", pics.tree.files["D:\\pic\\2025\\10\\01\\中文.jpg"])


def test_large_file_in_several_sendfile_chunks(pics: PictureHub) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one SEND_CHUNK
    (pics.tree.root / "big.jpg").write_bytes(data)
    assert fetch(pics.tcp_port, "D:\\pic\\big.jpg") == ("big.jpg", data)
    (pics.tree.root / "empty.jpg").write_bytes(b"")
    assert exchange(pics, request_frame("D:\\pic\\empty.jpg")) == (
        struct.pack(">I", 9) + b"empty.jpg" + struct.pack(">Q", 0))


def test_missing_file_gets_the_error_frame(pics: PictureHub) -> None:
    assert exchange(pics, request_frame("D:\\pic\\2025\\nope.jpg")) == ERROR
    assert fetch(pics.tcp_port, "D:\\pic\\2025\\nope.jpg") is None


def test_path_too_long(pics: PictureHub) -> None:
    long_path = "D:\\pic\\" + "x" * 600
    started = time.monotonic()
    assert exchange(pics, request_frame(long_path)) == ERROR  # max_path_bytes: 512
    # a huge announced length is refused at once, without waiting for the bytes
    assert exchange(pics, struct.pack(">I", 0xFFFFFFFF)) == ERROR
    assert time.monotonic() - started < 1.5  # well under read_timeout (2 s)
    exactly = "D:\\pic\\ok.jpg"
    assert fetch(pics.tcp_port, exactly) == ("ok.jpg", b"ok-picture")


@pytest.mark.parametrize("payload", [
    b"\x00\x00",  # short length prefix, then EOF
    b"",  # nothing at all, then EOF
    struct.pack(">I", 0),  # zero length
    struct.pack(">I", 20) + b"D:\\pic\\ok",  # fewer path bytes than announced, then EOF
    struct.pack(">I", 4) + b"\xff\xfe\xfd\xfc",  # not UTF-8
    b"GET / HTTP/1.0\r\n\r\n",  # an HTTP client on the wrong port
])
def test_garbage_gets_the_error_frame(pics: PictureHub, payload: bytes) -> None:
    assert exchange(pics, payload, half_close=True) == ERROR


def test_slow_client_hits_the_read_timeout(pics: PictureHub) -> None:
    with connect(pics) as sock:
        started = time.monotonic()
        sock.sendall(struct.pack(">I", 30) + b"D:\\pic")  # ...and the rest never comes
        answer = read_all(sock)
        elapsed = time.monotonic() - started
    assert answer == ERROR
    assert 1.5 <= elapsed < 6  # read_timeout: 2 s
    with connect(pics) as sock:  # silent from the start
        assert read_all(sock) == ERROR
    assert pics.wait_metric("datahubsync_pictures_errors_total", 2, transport="legacy_tcp",
                            reason="timeout") == 2


def test_client_that_stops_reading_is_dropped_after_the_idle_timeout(pics: PictureHub) -> None:
    big = os.urandom(64 * 1024 * 1024)  # far more than the socket buffers hold
    (pics.tree.root / "huge.jpg").write_bytes(big)
    with connect(pics) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(request_frame("D:\\pic\\huge.jpg"))
        assert pics.wait_metric("datahubsync_pictures_errors_total", 1, timeout=15,
                                transport="legacy_tcp", reason="timeout") == 1
        assert fetch(pics.tcp_port, A) is not None  # the server is fine meanwhile
        received = 0
        with pytest.raises(ConnectionResetError):  # dropped with a reset, not completed
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
    assert received < len(big)


def test_fifty_concurrent_connections(pics: PictureHub) -> None:
    files = list(pics.tree.files.items())
    # 49 connections that have not sent their request yet: a serial server would be
    # stuck on the first one; ours answers the 50th meanwhile.
    waiting = [connect(pics) for _ in range(49)]
    try:
        assert fetch(pics.tcp_port, A, timeout=1.5) == ("a.jpg", pics.tree.files[A])
        results: dict[int, object] = {}

        def finish(n: int, sock: socket.socket) -> None:
            path, content = files[n % len(files)]
            sock.sendall(request_frame(path))
            results[n] = read_answer(sock) == (path.rsplit("\\", 1)[1], content)

        threads = [threading.Thread(target=finish, args=(n, s)) for n, s in enumerate(waiting)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert results == {n: True for n in range(49)}
    finally:
        for sock in waiting:
            sock.close()


def test_connection_limit_answers_with_the_error_frame(tmp_path: Path) -> None:
    pics = start_picture_hub(tmp_path, legacy={"max_connections": 2}, workers=1)
    try:
        held = [connect(pics) for _ in range(2)]
        time.sleep(0.3)
        assert exchange(pics, request_frame(A)) == ERROR  # third at once: busy
        for sock in held:
            sock.close()
        time.sleep(0.3)
        assert fetch(pics.tcp_port, A) is not None
        assert pics.wait_metric("datahubsync_pictures_errors_total", 1,
                                transport="legacy_tcp", reason="busy") == 1
    finally:
        pics.hub.stop()
