"""No request makes `serve` answer 500 or keeps a connection forever (a real `serve`)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    Hub,
    call_json,
    free_port,
    make_dataset,
    raw_http,
    run_cli,
    wait_until,
    write_yaml,
)

TOKEN = "t-hostile"
KEY = "k-hostile"
BATCH = "/api/v1/sync-status/sync/batch"
PUSH = "/api/v1/pictures/tasks"
INGEST = "/api/v1/logs/ips"

BAD_BODIES = [
    pytest.param(b"\xff\xfe{}", "not UTF-8", id="not-utf8"),
    pytest.param(b'{"n": ' + b"9" * 5000 + b"}", "number too large", id="huge-int"),
    pytest.param(b"[" * 5000 + b"]" * 5000, "nested too deeply", id="deep"),
    pytest.param(b'{"a": "\\ud800"}', "lone UTF-16 surrogate", id="surrogate"),
    pytest.param(b'{"a": ', "not valid JSON", id="cut"),
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp("hostile-serve")
    make_dataset(tmp / "data" / "alpha", files=3)
    server = Hub(tmp, tmp / "data", workers=1, api_tokens=[TOKEN],
                 logs_ingest={"api_keys": [KEY]}, header_timeout=1, keepalive_timeout=2,
                 body_timeout=1, max_connections=8, max_request_bytes=2_000_000,
                 config_extra={"pictures": {"source": "push", "max_push_bytes": 1_000_000},
                               "batch": {"jobs": {"j": {"kind": "command",
                                                        "command": ["true", "{date}"]}}}})
    server.start()
    server.wait_ready("alpha")
    yield server
    server.stop()


def port(hub: Hub) -> int:
    return int(hub.port_file.read_text())


@pytest.mark.parametrize(("body", "problem"), BAD_BODIES)
@pytest.mark.parametrize(("path", "auth"), [(BATCH, {"Authorization": f"Bearer {TOKEN}"}),
                                            (PUSH, {"Authorization": f"Bearer {TOKEN}"}),
                                            (INGEST, {"X-API-Key": KEY})],
                         ids=["batch", "push", "ingest"])
def test_malformed_bodies_are_400_naming_the_problem(hub: Hub, path: str, auth: dict,
                                                     body: bytes, problem: str) -> None:
    status, doc = call_json(hub.url + path, "POST", raw=body, headers=auth)
    assert status == 400, doc
    assert problem in json.dumps(doc), doc


def test_a_body_in_two_segments_is_read_whole(hub: Hub) -> None:
    body = json.dumps({"start_date": "2025-10-06", "end_date": "2025-10-06", "job": "j"})
    head = (f"POST {BATCH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port(hub)), timeout=30) as sock:
        sock.sendall(head + body[:10].encode())
        time.sleep(0.2)  # a second TCP segment (the answer must not depend on this pause)
        sock.sendall(body[10:].encode())
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert b" 202 " in answer.split(b"\r\n")[0] or b" 200 " in answer.split(b"\r\n")[0], answer
    assert b"not valid JSON" not in answer


@pytest.mark.parametrize("path", [f"{BATCH}/progress/%00abc", f"{BATCH}/progress/" + "a" * 5000,
                                  f"{PUSH}/%00", f"{PUSH}/" + "x" * 5000,
                                  "/package/%00.zip", "/manifest/%00.json",
                                  "/delta/alpha/%00-x.zip"])
def test_odd_ids_in_paths_are_4xx_not_500(hub: Hub, path: str) -> None:
    status, _ = call_json(hub.url + path, token=TOKEN)
    assert 400 <= status < 500, (path, status)


def test_silent_and_trickling_connections_are_closed(hub: Hub) -> None:
    silent = socket.create_connection(("127.0.0.1", port(hub)), timeout=60)
    trickle = socket.create_connection(("127.0.0.1", port(hub)), timeout=60)
    trickle.sendall(b"GET /health HTTP/1.1\r\n")

    def closed(sock: socket.socket) -> bool:
        sock.settimeout(0.2)
        try:
            return sock.recv(100) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def trickle_closed() -> bool:
        try:
            trickle.sendall(b"X-Slow: 1\r\n")  # a header line now and then, never the end
        except (BrokenPipeError, ConnectionResetError):
            return True
        return closed(trickle)

    try:
        wait_until(lambda: closed(silent), "the silent connection to be closed")
        wait_until(trickle_closed, "the trickling connection to be closed")
    finally:
        silent.close()
        trickle.close()


def test_a_body_that_never_finishes_gets_408(hub: Hub) -> None:
    head = (f"POST {INGEST} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{").encode()
    answer = raw_http(port(hub), head, timeout=60)
    assert answer.split(b"\r\n")[0].endswith(b"408 Request Timeout"), answer[:200]


def test_connections_beyond_the_cap_get_503(hub: Hub) -> None:
    held = [socket.create_connection(("127.0.0.1", port(hub)), timeout=30) for _ in range(8)]
    try:
        def refused() -> bytes:
            answer = raw_http(port(hub), b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            return answer if b" 503 " in answer.split(b"\r\n")[0] else b""
        wait_until(refused, "a connection over max_connections to get 503")
    finally:
        for sock in held:
            sock.close()
    # once they are gone, the server answers again
    wait_until(lambda: call_json(hub.url + "/health")[0] == 200, "the server to answer again")


def test_error_pages_echo_nothing_and_name_no_version(hub: Hub) -> None:
    answer = raw_http(port(hub), b"GET /<script>alert(1)</script> HTTP/1.1\r\nHost: x\r\n"
                                 b"Bad Header Line\r\n\r\n")
    assert b"400" in answer.split(b"\r\n")[0]
    assert b"script" not in answer and b"Bad Header" not in answer
    ok = raw_http(port(hub), b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    headers = ok.split(b"\r\n\r\n")[0].lower()
    assert b"server: datahubsync\r\n" in headers + b"\r\n"
    assert b"aiohttp" not in headers and b"python" not in headers


def _get(hub: Hub, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(hub.url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.mark.parametrize(("headers", "status", "whole"), [
    ({"Range": "bytes=-0"}, 416, False),
    ({"Range": "bytes=abc"}, 200, True),
    ({"Range": "bytes=5-2"}, 200, True),
    ({"Range": "chars=0-10"}, 200, True),
    ({"Range": "bytes=0-1,4-5"}, 200, True),
    ({"Range": "bytes=0-9", "If-Range": "not a date"}, 200, True),
    ({"Range": "bytes=0-9", "If-Range": '"other-etag"'}, 200, True),
    ({"Range": "bytes=0-9"}, 206, False),
], ids=["suffix-zero", "garbage", "reversed", "other-unit", "multiple", "if-range-junk",
        "if-range-etag", "plain"])
def test_range_requests_as_rfc_9110_says(hub: Hub, headers: dict, status: int,
                                         whole: bool) -> None:
    full = _get(hub, "/package/alpha.zip")[2]
    got_status, _, body = _get(hub, "/package/alpha.zip", **headers)
    assert got_status == status, headers
    if whole:
        assert body == full
    elif status == 206:
        assert body == full[:10]


def test_store_down_is_503_and_bad_store_url_is_a_config_error(tmp_path: Path) -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/test?connect_timeout=2"
    (tmp_path / "empty").mkdir()
    server = Hub(tmp_path, tmp_path / "empty", workers=1,
                 logs_ingest={"api_keys": [KEY], "store_url": dead}).start()
    try:
        body = {"botnet_type": "ramnit", "ip_data": [{"ip": "8.8.8.8"}]}
        status, doc = call_json(server.url + INGEST, "POST", body, headers={"X-API-Key": KEY})
        assert status == 503, doc
        assert "store unavailable" in json.dumps(doc)
    finally:
        server.stop()
    bad: dict[str, Any] = {"state_dir": str(tmp_path / "s"), "serve": {
        "logs_ingest": {"store_url": "mysql://x@y/z"}}}
    result = run_cli(["serve"], config=write_yaml(tmp_path / "bad.yaml", bad), expect=2)
    assert "serve.logs_ingest.store_url" in result.err


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=0-\x1e", "whole"),  # found by fuzz/fuzz_range.py: str.strip() dropped \x1e
    ("bytes=0-\u0667", "whole"),  # found by fuzz/fuzz_range.py: \d matched Arabic-Indic 7
    ("bytes=0-9 ", "as-asked"),
    ("bytes=-0", "unsatisfiable"),
])
def test_range_verdicts_found_by_fuzzing(header: str, expected: str) -> None:
    from datahubsync.core.httprange import verdict

    assert verdict(header, None, None) == expected


def test_if_range_with_a_date_too_far_is_the_whole_file(hub: Hub) -> None:
    """Found by fuzz/fuzz_range.py: email.utils raised OverflowError (a 500)."""
    full = _get(hub, "/package/alpha.zip")[2]
    status, _, body = _get(hub, "/package/alpha.zip", **{
        "Range": "bytes=0-9", "If-Range": "Mon, 01 Dec 99999999999999999999 10:00:00 GMT"})
    assert status == 200 and body == full
