"""Many pictures in one ``POST /api/v1/pictures/bundle``: the server's answers through a
real ``serve``, and a client that keeps every whole picture and fetches the rest alone
when a bundle is refused, cut short or malformed."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from datahubsync.pictures import bundle_format
from datahubsync.pictures.transfer import HttpTransport, local_path
from tests.helpers import serve_connections
from tests.pictures_serve_kit import TOKEN, PictureHub, start_picture_hub
from tests.traversal_corpus import client_paths, file_url_path


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[PictureHub]:
    picture_hub = start_picture_hub(tmp_path)
    yield picture_hub
    picture_hub.hub.stop()


def post(url: str, body: bytes, token: str | None = TOKEN) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + bundle_format.PATH, body, headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def entries(raw: bytes) -> list[tuple[dict[str, object], bytes]]:
    """The answer split the way the format says: a line, then ``size`` bytes."""
    out = []
    while raw:
        line, _, raw = raw.partition(b"\n")
        entry = json.loads(line)
        size = entry.get("size", 0)
        out.append((entry, raw[:size]))
        raw = raw[size:]
    return out


def test_entries_in_the_order_asked(hub: PictureHub, tmp_path: Path) -> None:
    names = sorted(hub.tree.files)
    first = hub.tree.files[names[0]]
    asked = [{"path": names[0]}, {"path": r"D:\pic\nothing-here.jpg"},
             {"path": names[1], "have": len(hub.tree.files[names[1]])},
             {"path": names[2], "have": 1}, {"path": names[0].replace("\\", "/")}]
    status, raw = post(hub.url, json.dumps({"files": asked}).encode())
    assert status == 200
    got = entries(raw)
    assert got == [({"size": len(first)}, first), ({"missing": True}, b""),
                   ({"same": True}, b""),
                   ({"size": len(hub.tree.files[names[2]])}, hub.tree.files[names[2]]),
                   ({"size": len(first)}, first)]


def test_every_traversal_path_is_missing_and_no_secret_leaves(hub: PictureHub,
                                                              tmp_path: Path) -> None:
    corpus = client_paths(tmp_path / "tree")
    for start in range(0, len(corpus), bundle_format.MAX_FILES):
        part = corpus[start:start + bundle_format.MAX_FILES]
        status, raw = post(hub.url, json.dumps({"files": [{"path": p} for p in part]}).encode())
        assert status == 200
        assert hub.tree.secret not in raw
        assert [entry for entry, _ in entries(raw)] == [{"missing": True}] * len(part), part


@pytest.mark.parametrize("body", [
    b"[]", b'{"files": []}', b'{"files": "D:/pic/a.jpg"}', b'{"files": [{"path": 3}]}',
    b'{"files": [{}]}',
    b'{"files": [{"path": "D:/pic/a.jpg", "have": -1}]}',
    b'{"files": [{"path": "D:/pic/a.jpg", "have": true}]}',
    json.dumps({"files": [{"path": "D:/pic/ok.jpg"}] * (bundle_format.MAX_FILES + 1)}).encode(),
    b"{not json",
])
def test_a_malformed_request_is_a_400_that_says_why(hub: PictureHub, body: bytes) -> None:
    status, raw = post(hub.url, body)
    assert status == 400, raw
    assert json.loads(raw)["error"]


def test_without_the_token_401_and_an_oversized_body_413(hub: PictureHub) -> None:
    body = json.dumps({"files": [{"path": r"D:\pic\ok.jpg"}]}).encode()
    assert post(hub.url, body, token=None)[0] == 401
    assert post(hub.url, body, token="wrong")[0] == 401
    assert post(hub.url, b'{"files": ["' + b"x" * 2_000_000 + b'"]}')[0] == 413


def test_the_client_fetches_a_bundle_then_skips_what_it_has(hub: PictureHub,
                                                           tmp_path: Path) -> None:
    transport = HttpTransport(hub.url, TOKEN, 30, bundle_files=32)
    names = sorted(hub.tree.files) + [r"D:\pic\nothing-here.jpg"]
    items = [(name, local_path(tmp_path / "mirror", name)) for name in names]
    got = transport.fetch_many(items)
    assert [g.state for g in got] == ["downloaded"] * (len(names) - 1) + ["not_found"]
    for name, dest in items[:-1]:
        assert dest.read_bytes() == hub.tree.files[name]
    again = transport.fetch_many(items)
    assert [g.skipped for g in again[:-1]] == [True] * (len(names) - 1)
    total = sum(map(len, hub.tree.files.values()))
    assert hub.wait_metric("datahubsync_pictures_bytes_sent_total", total,
                           transport="http") == total  # the second round sent nothing
    assert hub.wait_metric("datahubsync_http_requests_total", 2, route=bundle_format.PATH,
                           status="200") == 2  # one request per round, no GET
    assert hub.metric("datahubsync_http_requests_total", route="/files/{path}",
                      status="200") == 0
    transport.close()


class _Canned:
    """Answers each request with the next canned reply (keep-alive), recording the
    request lines; hangs up when it has none left."""

    def __init__(self, replies: list[bytes]) -> None:
        self.replies = replies
        self.requests: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        serve_connections(self.server, self._answer, threaded=True)

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while self.replies:
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                head, _, data = data.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                while length and len(data) < length[0]:
                    data += conn.recv(65536)
                data = data[length[0]:] if length else data
                self.requests.append(head.split(b"\r\n")[0])
                reply = self.replies.pop(0)
                conn.sendall(reply)
                if b"Connection: close" in reply.partition(b"\r\n\r\n")[0]:
                    return  # the reply's framing ends with the connection


def _reply(body: bytes, status: str = "200 OK",
           content_type: str = bundle_format.CONTENT_TYPE) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _entry(data: bytes) -> bytes:
    return b'{"size": %d}\n%s' % (len(data), data)


NAMES = [f"D:\\pic\\{n}.jpg" for n in "abc"]


def _fetch(tmp_path: Path, server: _Canned, **kwargs: int) -> list[tuple[str, bool]]:
    transport = HttpTransport(server.url, "t", 10, bundle_files=8, **kwargs)
    items = [(name, local_path(tmp_path, name)) for name in NAMES]
    try:
        return [(g.state, g.skipped) for g in transport.fetch_many(items)]
    finally:
        transport.close()


def _gets(server: _Canned) -> list[bytes]:
    return [r for r in server.requests if r.startswith(b"GET ")]


def test_an_older_serve_without_the_route_gets_one_get_per_picture(tmp_path: Path) -> None:
    server = _Canned([_reply(b"404: Not Found", "404 Not Found", "text/plain"),
                      *(_reply(n.encode(), content_type="image/jpeg") for n in NAMES)])
    assert _fetch(tmp_path, server) == [("downloaded", False)] * 3
    assert len(_gets(server)) == 3
    assert [local_path(tmp_path, n).read_bytes() for n in NAMES] == [n.encode() for n in NAMES]


def test_a_bundle_cut_in_the_middle_keeps_the_whole_pictures_and_fetches_the_rest(
        tmp_path: Path) -> None:
    cut = _entry(b"first") + b'{"size": 1000}\n' + b"x" * 10
    reply = (f"HTTP/1.1 200 OK\r\nContent-Type: {bundle_format.CONTENT_TYPE}\r\n"
             "Connection: close\r\n\r\n").encode() + cut
    server = _Canned([reply, *(_reply(b"alone-" + n.encode(), content_type="image/jpeg")
                               for n in NAMES[1:])])
    assert _fetch(tmp_path, server) == [("downloaded", False)] * 3
    assert local_path(tmp_path, NAMES[0]).read_bytes() == b"first"
    assert local_path(tmp_path, NAMES[1]).read_bytes() == b"alone-" + NAMES[1].encode()
    assert len(_gets(server)) == 2
    assert not list(tmp_path.rglob(".*.part"))


@pytest.mark.parametrize("line", [b"not json\n", b"[1]\n", b'{"size": "9"}\n',
                                  b'{"size": -1}\n', b"{" + b" " * 5000 + b"}\n"])
def test_a_malformed_entry_line_means_each_picture_alone(tmp_path: Path, line: bytes) -> None:
    server = _Canned([_reply(_entry(b"first") + line),
                      *(_reply(b"alone", content_type="image/jpeg") for _ in NAMES[1:])])
    assert _fetch(tmp_path, server) == [("downloaded", False)] * 3
    assert local_path(tmp_path, NAMES[0]).read_bytes() == b"first"
    assert local_path(tmp_path, NAMES[2]).read_bytes() == b"alone"


def test_an_entry_over_max_picture_bytes_is_an_error_and_not_stored(tmp_path: Path) -> None:
    big = b"y" * 5000
    server = _Canned([_reply(_entry(b"first") + _entry(big) + _entry(b"third")),
                      _reply(b"alone", content_type="image/jpeg")])
    got = _fetch(tmp_path, server, max_bytes=1000)
    assert got == [("downloaded", False), ("error", False), ("downloaded", False)]
    assert not local_path(tmp_path, NAMES[1]).exists()
    assert local_path(tmp_path, NAMES[2]).read_bytes() == b"alone"  # fetched alone


def test_a_bundle_longer_than_its_entries_keeps_them_and_drops_the_connection(
        tmp_path: Path) -> None:
    server = _Canned([_reply(b"".join(_entry(n.encode()) for n in NAMES) + b"extra")])
    assert _fetch(tmp_path, server) == [("downloaded", False)] * 3
    assert not _gets(server)


def test_a_refused_token_refuses_every_picture_of_the_bundle(tmp_path: Path) -> None:
    server = _Canned([_reply(b"", "401 Unauthorized", "text/plain")])
    assert _fetch(tmp_path, server) == [("refused", False)] * 3
    assert not _gets(server)


def test_large_entries_are_fetched_alone(tmp_path: Path) -> None:
    server = _Canned([_reply(bundle_format.LARGE + _entry(b"b") + bundle_format.MISSING),
                      _reply(b"big one", content_type="image/jpeg")])
    assert _fetch(tmp_path, server) == [("downloaded", False), ("downloaded", False),
                                        ("not_found", False)]
    assert local_path(tmp_path, NAMES[0]).read_bytes() == b"big one"
    assert len(_gets(server)) == 1


def test_two_tasks_naming_one_picture_in_one_batch_are_fetched_one_after_the_other(
        hub: PictureHub, tmp_path: Path) -> None:
    """Rows of one batch naming the same destination: the first goes in the bundle, the
    second after it (holding that destination's lock twice would wait forever)."""
    from datahubsync.pictures.config import PicturesConfig
    from datahubsync.pictures.fetching import DownloadPass
    from datahubsync.pictures.ledger import FileRow
    from datahubsync.pictures.transfer import PathLocks

    cfg = PicturesConfig(server_url=hub.url, token=TOKEN, local_root=tmp_path / "mirror")
    transport = HttpTransport(hub.url, TOKEN, 30, bundle_files=cfg.bundle_files)
    download = DownloadPass(cfg, None, None, transport, PathLocks(),  # type: ignore[arg-type]
                            lambda _: None, lambda: 0.0)
    name = sorted(hub.tree.files)[0]
    rows = [FileRow(f"t{n}", 0, remote, 0, 0, 0.0) for n, remote in
            enumerate([name, r"D:\pic\ok.jpg", name, r"D:\pic\..\secret.txt"])]
    done = {outcome.row.task_id: (outcome.state, skipped)
            for outcome, skipped in download.fetch(rows)}
    assert done == {"t0": ("downloaded", False), "t1": ("downloaded", False),
                    "t2": ("downloaded", True), "t3": ("error", False)}
    assert local_path(cfg.local_root, name).read_bytes() == hub.tree.files[name]
    transport.close()


@pytest.mark.parametrize("route", ["bundle", "files"])
def test_a_client_that_stops_reading_is_dropped_after_send_timeout(tmp_path: Path,
                                                                   route: str) -> None:
    """64 pictures of 4 MB in a bundle, or one of 48 MB from /files, nothing read: once
    the socket buffers are full the answer makes no progress, and serve drops the
    connection after serve.send_timeout."""
    size = 4 * 1024 * 1024 if route == "bundle" else 48 * 1024 * 1024
    picture_hub = start_picture_hub(tmp_path, picture_bytes=size, send_timeout=1)
    try:
        names = [n for n in sorted(picture_hub.tree.files) if n.endswith(("a.jpg", "b.jpg"))]
        if route == "bundle":
            body = json.dumps({"files": [{"path": names[n % len(names)]}
                                         for n in range(bundle_format.MAX_FILES)]}).encode()
            request = (b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                       % (bundle_format.PATH.encode(), TOKEN.encode(), len(body), body))
            asked = bundle_format.MAX_FILES * size
        else:
            request = (b"GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                       % (file_url_path(names[0]).encode(), TOKEN.encode()))
            asked = size
        received = picture_hub.unread_until_dropped(request)
        assert received < asked / 2, "most of the answer was never sent"
    finally:
        picture_hub.hub.stop()


def test_a_picture_that_shrinks_while_it_is_sent_drops_the_connection(tmp_path: Path) -> None:
    """The entry line announced 16 MiB; the file is cut to nothing once the answer has
    started (the client reads nothing more meanwhile, so most of it is still unsent):
    serve cannot fill the entry, drops the connection and counts it, and never pads."""
    size = bundle_format.MAX_BUNDLED_BYTES
    picture_hub = start_picture_hub(tmp_path, picture_bytes=size)
    try:
        name = next(n for n in sorted(picture_hub.tree.files) if n.endswith("a.jpg"))
        on_disk = picture_hub.tree.root / "2025" / "10" / "01" / "a.jpg"
        body = json.dumps({"files": [{"path": name}]}).encode()
        request = (b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                   % (bundle_format.PATH.encode(), TOKEN.encode(), len(body), body))
        port = int(picture_hub.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(request)
            head = b""
            while b"}\n" not in head:  # the headers, then the entry's line
                chunk = sock.recv(4096)
                assert chunk, f"closed after {head!r}"
                head += chunk
            assert head.startswith(b"HTTP/1.1 200") and b'{"size": %d}\n' % size in head
            on_disk.write_bytes(b"")  # the file is open, its size announced
            received = len(head)
            while chunk := sock.recv(1024 * 1024):  # what was sent before, then the drop
                received += len(chunk)
        assert received < size, "the entry was not filled in"
        assert picture_hub.wait_metric("datahubsync_pictures_errors_total", 1,
                                       transport="http", reason="file_changed") == 1
    finally:
        picture_hub.hub.stop()


def _rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` and of its children (serve's forked workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for one in [pid, *map(int, children)]:
        status = Path(f"/proc/{one}/status").read_text()
        total += int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))
    return total


def test_stalled_bundles_of_large_pictures_hold_no_copies_in_memory(tmp_path: Path) -> None:
    """Eight bundles of 16 MiB pictures whose clients read only the first entry line:
    the pictures go out from the page cache (sendfile), so serve's memory does not
    grow by the pictures in flight (reading each into memory first held at least
    8 x 16 MiB here)."""
    size = bundle_format.MAX_BUNDLED_BYTES
    picture_hub = start_picture_hub(tmp_path, picture_bytes=size)
    try:
        assert picture_hub.hub.proc is not None
        name = next(n for n in sorted(picture_hub.tree.files) if n.endswith("a.jpg"))
        body = json.dumps({"files": [{"path": name}] * 4}).encode()
        request = (b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                   % (bundle_format.PATH.encode(), TOKEN.encode(), len(body), body))
        port = int(picture_hub.url.rsplit(":", 1)[1])
        before = _rss_kib(picture_hub.hub.proc.pid)
        stalled = []
        try:
            for _ in range(8):
                sock = socket.create_connection(("127.0.0.1", port), timeout=60)
                stalled.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                sock.sendall(request)
                head = b""
                while b"}\n" not in head:  # the answer has started: its first entry is open
                    chunk = sock.recv(4096)
                    assert chunk, f"closed after {head!r}"
                    head += chunk
            grown = _rss_kib(picture_hub.hub.proc.pid) - before
        finally:
            for sock in stalled:
                sock.close()
        assert grown < 8 * size // 1024 // 2, f"serve grew by {grown} KiB"
    finally:
        picture_hub.hub.stop()
