"""Transfers cut short: a truncated picture is an error, never a file under its final name."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from datahubsync.pictures.transfer import HttpTransport, LegacyTcpTransport, local_path
from tests.helpers import serve_connections
from tests.scripted_http import Cut, Make, Scripted, body_of, ok, open_sockets


@pytest.fixture
def liar() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server that answers each connection with the next canned reply, then hangs up."""
    replies: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))

    def answer(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(replies.pop(0))

    serve_connections(server, answer)
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


class _KeepAliveServer:
    """Answers requests with canned replies; per connection, ``per_connection`` replies
    then it hangs up (without saying so, like a server closing an idle connection)."""

    def __init__(self, replies: list[bytes], per_connection: int) -> None:
        self.replies, self.per_connection = replies, per_connection
        self.connections = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        serve_connections(self.server, self._answer)

    def _answer(self, conn: socket.socket) -> None:
        self.connections += 1
        with conn:
            for _ in range(self.per_connection):
                request = b""
                while b"\r\n\r\n" not in request:
                    data = conn.recv(65536)
                    if not data:
                        break
                    request += data
                if not request or not self.replies:
                    break
                conn.sendall(self.replies.pop(0))


def _ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def test_a_connection_the_server_closed_is_replaced_once(tmp_path: Path) -> None:
    server = _KeepAliveServer([_ok(b"first"), _ok(b"second")], per_connection=1)
    transport = HttpTransport(f"http://127.0.0.1:{server.port}", None, 5)
    for name, body in (("a.jpg", b"first"), ("b.jpg", b"second")):
        dest = local_path(tmp_path, f"D:\\pic\\{name}")
        got = transport.fetch(f"D:\\pic\\{name}", dest)
        assert got.state == "downloaded", got
        assert dest.read_bytes() == body
    assert server.connections == 2
    transport.close()


def test_an_error_body_is_read_and_the_connection_kept(tmp_path: Path) -> None:
    missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"
    server = _KeepAliveServer([missing, _ok(b"picture")], per_connection=2)
    transport = HttpTransport(f"http://127.0.0.1:{server.port}", None, 5)
    gone = transport.fetch("D:\\pic\\gone.jpg", local_path(tmp_path, "D:\\pic\\gone.jpg"))
    assert gone.state == "not_found"
    dest = local_path(tmp_path, "D:\\pic\\here.jpg")
    assert transport.fetch("D:\\pic\\here.jpg", dest).state == "downloaded"
    assert dest.read_bytes() == b"picture" and server.connections == 1
    transport.close()


def test_http_body_longer_than_announced_is_not_stored(
        tmp_path: Path, liar: tuple[int, list[bytes]]) -> None:
    port, replies = liar
    replies.append(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 200_000)
    dest = local_path(tmp_path, "D:\\pic\\a.jpg")
    got = HttpTransport(f"http://127.0.0.1:{port}", "t", 5).fetch("D:\\pic\\a.jpg", dest)
    assert got.state == "error" and "more than its Content-Length" in got.error
    assert not dest.exists()


@pytest.mark.parametrize("framing", ["chunked", "close-delimited", "announced"])
def test_http_picture_over_max_picture_bytes_is_an_error(
        tmp_path: Path, liar: tuple[int, list[bytes]], framing: str) -> None:
    port, replies = liar
    body = b"y" * 300_000
    if framing == "chunked":
        chunks = b"".join(b"%x\r\n" % 30_000 + body[i:i + 30_000] + b"\r\n"
                          for i in range(0, len(body), 30_000))
        replies.append(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
                       + b"0\r\n\r\n")
    elif framing == "close-delimited":
        replies.append(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
    else:
        replies.append(b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + body)
    dest = local_path(tmp_path, "D:\\pic\\a.jpg")
    transport = HttpTransport(f"http://127.0.0.1:{port}", "t", 5, max_bytes=100_000)
    got = transport.fetch("D:\\pic\\a.jpg", dest)
    assert got.state == "error" and "pictures.max_picture_bytes" in got.error, got
    assert not dest.exists() and not list(dest.parent.glob(".*.part"))


def test_legacy_frame_over_max_or_longer_than_announced(
        tmp_path: Path, liar: tuple[int, list[bytes]]) -> None:
    port, replies = liar
    name = b"a.jpg"
    header = struct.pack(">I", len(name)) + name
    replies.append(header + struct.pack(">Q", 10**12))  # a terabyte announced
    replies.append(header + struct.pack(">Q", 1000) + b"z" * 5000)  # more than announced
    dest = local_path(tmp_path, "D:\\pic\\a.jpg")
    transport = LegacyTcpTransport("127.0.0.1", port, 5, max_bytes=100_000)
    got = transport.fetch("D:\\pic\\a.jpg", dest)
    assert got.state == "error" and "pictures.max_picture_bytes" in got.error
    got = transport.fetch("D:\\pic\\a.jpg", dest)
    assert got.state == "error" and "more than the 1000 bytes" in got.error
    assert not dest.exists()


# --------------------------------------------------------------- GETs written ahead


def _remotes(count: int) -> list[str]:
    return [f"D:\\pic\\p{n}.jpg" for n in range(count)]


def _ahead(tmp_path: Path, server: Scripted, remotes: list[str],
           max_bytes: int = 64 * 1024) -> list[tuple[str, str | None]]:
    transport = HttpTransport(server.url, "t", 30, max_bytes=max_bytes, bundle_files=0)
    got = transport.fetch_many([(r, local_path(tmp_path, r)) for r in remotes])
    transport.close()
    return [(g.state, g.error) for g in got]


def test_new_pictures_are_pipelined_and_each_answer_settles_its_own(
        tmp_path: Path, scripted: Make) -> None:
    """One connection for twenty GETs written ahead: a 404 is not found, a picture over
    max_picture_bytes an error (its connection dropped, the rest on a new one), the
    others downloaded whole, no temp file anywhere."""
    def reply(path: str, _n: int) -> bytes:
        if path.endswith("/p3.jpg"):
            return b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"
        return ok(b"x" * 70_000) if path.endswith("/p7.jpg") else ok(body_of(path))

    server = scripted(reply)
    remotes = _remotes(20)
    got = _ahead(tmp_path, server, remotes)
    assert got[3] == ("not_found", "HTTP 404 from server")
    assert got[7][0] == "error" and "more than pictures.max_picture_bytes" in (got[7][1] or "")
    assert [state for state, _ in got].count("downloaded") == 18
    for n, remote in enumerate(remotes):
        dest = local_path(tmp_path, remote)
        assert dest.exists() == (n not in (3, 7))
        if dest.exists():
            assert dest.read_bytes() == body_of(f"/files/D:/pic/p{n}.jpg")
    assert not list(tmp_path.rglob(".*.part"))
    assert server.connections == 2 and max(server.queued) > 1
    assert set(server.paths) == {f"/files/D:/pic/p{n}.jpg" for n in range(20)}


def test_a_pipelined_picture_cut_mid_body_is_an_error_alone(
        tmp_path: Path, scripted: Make) -> None:
    server = scripted(lambda path, _n: Cut(ok(body_of(path))[:-50]) if path.endswith("/p2.jpg")
                      else ok(body_of(path)))
    got = _ahead(tmp_path, server, _remotes(6))
    assert got[2][0] == "error" and "truncated" in (got[2][1] or "")
    assert [s for s, _ in got] == ["downloaded"] * 2 + ["error"] + ["downloaded"] * 3
    assert not local_path(tmp_path, _remotes(6)[2]).exists()
    assert not list(tmp_path.rglob(".*.part"))


def test_a_refused_token_refuses_every_pipelined_picture(tmp_path: Path,
                                                        scripted: Make) -> None:
    server = scripted(lambda _path, _n: b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
    assert [s for s, _ in _ahead(tmp_path, server, _remotes(5))] == ["refused"] * 5
    assert server.connections == 1


def test_a_pass_closes_its_threads_connections(tmp_path: Path, scripted: Make) -> None:
    """``pictures run`` starts new fetch threads every pass: each thread's keep-alive
    connections are closed when it ends, not kept open for the life of the process."""
    from datahubsync.pictures.config import PicturesConfig
    from datahubsync.pictures.fetching import DownloadPass
    from datahubsync.pictures.ledger import Ledger, NewTask, RetryRules
    from datahubsync.pictures.result import PassResult
    from datahubsync.pictures.transfer import PathLocks

    server = scripted(lambda path, _n: ok(body_of(path)))
    cfg = PicturesConfig(server_url=server.url, token="t", local_root=tmp_path / "m",
                         workers=4, bundle_files=0)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    rules = RetryRules(60, 3600, 86400, 3)
    transport = HttpTransport(server.url, "t", 30, bundle_files=0)
    before = open_sockets()
    for n in range(3):
        ledger.add_tasks([NewTask(f"t{n}", tuple(_remotes(12)[4 * n:4 * n + 4]))])
        result = PassResult()
        DownloadPass(cfg, ledger, rules, transport, PathLocks(), lambda _: None,
                     lambda: 1e12).run(result)
        assert result.downloaded == 4
    assert server.connections >= 3
    assert _wait_for(lambda: open_sockets() <= before), \
        f"{open_sockets() - before} sockets left open"
    transport.close()
    ledger.close()


def _wait_for(condition: Callable[[], bool], bound: float = 30) -> bool:
    """The fetch threads close their connections as they end, after the pass returns."""
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
