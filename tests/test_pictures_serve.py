r"""Picture serving in a real ``serve``: ``/files`` over HTTP, the traversal corpus against
HTTP and the legacy TCP listener, metrics, and the doctor's last-send warning."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from datahubsync.pictures.lastsend import LastSend, last_send_path, read_last_send
from tests.helpers import run_cli
from tests.legacy_picture_client import fetch, read_all, request_frame
from tests.pictures_serve_kit import TOKEN, PictureHub, start_picture_hub
from tests.traversal_corpus import RAW_URL_TARGETS, client_paths, file_url_path

A = "D:\\pic\\2025\\10\\01\\a.jpg"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def pics(tmp_path: Path) -> Iterator[PictureHub]:
    server = start_picture_hub(tmp_path)
    try:
        yield server
    finally:
        server.hub.stop()


def get(pics: PictureHub, target: str, headers: dict[str, str] | None = None,
        method: str = "GET") -> tuple[int, Message, bytes]:
    """A raw request: the target is sent exactly as given (no client-side normalising)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(pics.url.rsplit(":", 1)[1]), timeout=20)
    try:
        conn.request(method, target, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()  # names case-insensitive
    finally:
        conn.close()


def test_auth_is_required_and_checked_before_the_path(pics: PictureHub) -> None:
    url = file_url_path(A)
    assert get(pics, url)[0] == 401
    assert get(pics, url, {"Authorization": "Bearer wrong"})[0] == 401
    assert get(pics, url, {"X-API-Key": TOKEN[:-1]})[0] == 401
    status, headers, body = get(pics, file_url_path("D:\\pic\\missing.jpg"))
    assert status == 401 and TOKEN.encode() not in body  # says nothing about the file
    assert get(pics, url, AUTH)[0] == 200
    assert get(pics, url, {"X-API-Key": TOKEN})[0] == 200


def test_serves_files_by_the_client_path(pics: PictureHub) -> None:
    for client_path, data in pics.tree.files.items():
        status, headers, body = get(pics, file_url_path(client_path), AUTH)
        assert status == 200 and body == data, client_path
        assert int(headers["Content-Length"]) == len(data)
    data = pics.tree.files[A]
    # other spellings of the same path: backslashes encoded, lower-case drive, encoded colon
    for target in ("/files/D:%5Cpic%5C2025%5C10%5C01%5Ca.jpg", "/files/d:/pic/2025/10/01/a.jpg",
                   "/files/D%3A/pic/2025/10/01/a.jpg", "/files/D:/PIC/2025/10/01/a.jpg",
                   "/files/D:/pic//2025/./10/01/a.jpg"):
        status, _, body = get(pics, target, AUTH)
        assert (status, body) == (200, data), target


def test_range_etag_and_head(pics: PictureHub) -> None:
    url, data = file_url_path(A), pics.tree.files[A]
    status, headers, body = get(pics, url, {**AUTH, "Range": "bytes=10-19"})
    assert (status, body) == (206, data[10:20])
    assert headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    status, _, body = get(pics, url, {**AUTH, "Range": "bytes=-5"})
    assert (status, body) == (206, data[-5:])
    status, _, _ = get(pics, url, {**AUTH, "Range": f"bytes={len(data) + 10}-"})
    assert status == 416

    status, headers, _ = get(pics, url, AUTH)
    etag = headers["ETag"]
    assert etag and headers["Accept-Ranges"] == "bytes" and "Last-Modified" in headers
    status, _, body = get(pics, url, {**AUTH, "If-None-Match": etag})
    assert (status, body) == (304, b"")
    status, _, body = get(pics, url, {**AUTH, "If-None-Match": '"other"'})
    assert (status, body) == (200, data)

    status, headers, body = get(pics, url, AUTH, method="HEAD")
    assert (status, body) == (200, b"") and int(headers["Content-Length"]) == len(data)
    assert get(pics, file_url_path("D:\\pic\\missing.jpg"), AUTH, method="HEAD")[0] == 404


def _answer(response: tuple[int, Message, bytes]) -> tuple[int, bytes, list[tuple[str, str]]]:
    status, headers, body = response
    return status, body, sorted((k, v) for k, v in headers.items() if k != "Date")


def test_traversal_corpus_over_http(pics: PictureHub, tmp_path: Path) -> None:
    missing = _answer(get(pics, file_url_path("D:\\pic\\missing.jpg"), AUTH))
    assert missing[0] == 404
    secret = pics.tree.secret
    for client_path in client_paths(tmp_path / "tree"):
        if not client_path:
            continue  # "/files/" is not a route at all
        answer = _answer(get(pics, file_url_path(client_path), AUTH))
        assert answer == missing, client_path  # same answer as a missing file
    for target in RAW_URL_TARGETS:
        status, _, body = get(pics, target, AUTH)
        assert secret not in body, target
        assert status in (404, 400, 414), (target, status)
        if status == 404:
            assert body == b"", target


def test_traversal_corpus_over_legacy_tcp(pics: PictureHub, tmp_path: Path) -> None:
    secret = pics.tree.secret
    for client_path in client_paths(tmp_path / "tree"):
        import socket

        with socket.create_connection(("127.0.0.1", pics.tcp_port), timeout=20) as sock:
            sock.sendall(request_frame(client_path))
            answer = read_all(sock)
        assert answer == bytes(12), client_path  # the error frame and nothing else
        assert secret not in answer
    assert fetch(pics.tcp_port, A) == ("a.jpg", pics.tree.files[A])  # and it still serves


def test_nothing_outside_the_root_is_opened(pics: PictureHub, tmp_path: Path) -> None:
    """inotify on the directories outside the root: no open, no read, by either transport."""
    from tests.inotify import OpenWatch

    base = tmp_path / "tree"
    with OpenWatch([base / "outside", base / "pic_evil", base]) as watch:
        for client_path in client_paths(base):
            if client_path:
                get(pics, file_url_path(client_path), AUTH)
            fetch(pics.tcp_port, client_path)
        for target in RAW_URL_TARGETS:
            get(pics, target, AUTH)
        time.sleep(0.2)
        assert watch.events() == []
        (base / "outside" / "secret.txt").read_bytes()  # the watch does see an open
        assert watch.events()


def test_metrics_count_sends_and_errors_by_transport(pics: PictureHub) -> None:
    started = time.time()
    data = pics.tree.files[A]
    for _ in range(3):
        assert get(pics, file_url_path(A), AUTH)[0] == 200
    assert get(pics, file_url_path(A), {**AUTH, "Range": "bytes=0-9"})[0] == 206
    assert get(pics, file_url_path(A), AUTH, method="HEAD")[0] == 200  # not a send
    assert get(pics, file_url_path("D:\\pic\\missing.jpg"), AUTH)[0] == 404
    assert get(pics, file_url_path("D:\\pic\\..\\secret.txt"), AUTH)[0] == 404
    assert get(pics, file_url_path(A))[0] == 401
    for _ in range(2):
        assert fetch(pics.tcp_port, A) == ("a.jpg", data)
    assert fetch(pics.tcp_port, "D:\\pic\\missing.jpg") is None

    files, bts = ("datahubsync_pictures_files_sent_total",
                  "datahubsync_pictures_bytes_sent_total")
    errors = "datahubsync_pictures_errors_total"
    assert pics.wait_metric(files, 4, transport="http") == 4
    assert pics.wait_metric(bts, 3 * len(data) + 10, transport="http") == 3 * len(data) + 10
    assert pics.wait_metric(files, 2, transport="legacy_tcp") == 2
    assert pics.wait_metric(bts, 2 * len(data), transport="legacy_tcp") == 2 * len(data)
    assert pics.wait_metric(errors, 1, transport="http", reason="not_found") == 1
    assert pics.wait_metric(errors, 1, transport="http", reason="refused") == 1
    assert pics.wait_metric(errors, 1, transport="http", reason="unauthorized") == 1
    assert pics.wait_metric(errors, 1, transport="legacy_tcp", reason="not_found") == 1
    last = pics.wait_metric("datahubsync_pictures_last_send_timestamp_seconds", started)
    assert started <= last <= time.time()


def _doctor(pics: PictureHub, expect: int) -> dict[str, object]:
    result = run_cli(["--json", "doctor", "--min-free", "0"], config=pics.hub.config,
                     expect=expect)
    checks = json.loads(result.out)["checks"]
    return next(c for c in checks if c["name"] == "picture sends")


def test_last_send_survives_restart_and_doctor_warns_when_stale(pics: PictureHub) -> None:
    state = last_send_path(pics.hub.config.parent / "hubstate")
    assert _doctor(pics, 0)["ok"] is True  # nothing sent yet: not a failure
    before = time.time()
    assert fetch(pics.tcp_port, A) is not None
    assert pics.hub.stop() == 0  # flushes the record
    recorded = read_last_send(state)
    assert recorded is not None and before <= recorded <= time.time()
    check = _doctor(pics, 0)
    assert check["ok"] is True and "min ago" in check["detail"]

    # 25 hours without a send (serve.picture_stale_after defaults to 24 h)
    old = time.time() - 25 * 3600
    state.unlink()
    stale = LastSend(state)
    stale.mark(old)
    stale.sync()
    check = _doctor(pics, 1)
    assert check["ok"] is False and "25.0 h ago" in check["detail"]

    # a restarted server reports the recorded time until it sends again
    pics.hub.start()
    gauge = pics.wait_metric("datahubsync_pictures_last_send_timestamp_seconds", old)
    assert abs(gauge - old) < 1
    assert fetch(pics.tcp_port, A) is not None
    assert pics.wait_metric("datahubsync_pictures_last_send_timestamp_seconds",
                            time.time() - 5) > old
    pics.hub.stop()
    assert _doctor(pics, 0)["ok"] is True
