"""The IP ingest endpoint of a real `serve`: SQLite and PostgreSQL stores."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import Hub, call_json, wait_until

KEY = "k-3f9a1c"
PATH = "/api/v1/logs/ips"
AUTH = {"X-API-Key": KEY}


def stats(hub: Hub) -> dict[str, Any]:
    status, doc = call_json(hub.url + "/api/v1/logs/stats", headers=AUTH)
    assert status == 200, doc
    return doc


def batch(ips: list[str], day: str = "2025-12-09") -> dict[str, Any]:
    return {"botnet_type": "ramnit", "source_ip": "203.0.113.9", "ip_data": [
        {"ip": ip, "timestamp": f"{day} 16:00:01", "timestamp_source": "line", "date": day,
         "log_hour": 16, "botnet_type": "ramnit", "raw_line_prefix": f"{day} 16:00:01 {ip}"}
        for ip in ips]}


def start(tmp_path: Path, **ingest: Any) -> Hub:
    (tmp_path / "empty").mkdir(parents=True, exist_ok=True)
    return Hub(tmp_path, tmp_path / "empty", workers=2,
               logs_ingest={"api_keys": [KEY], "max_body_bytes": 200_000, **ingest}).start()


@pytest.fixture(params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hub]:
    pg_url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    if pg_url:
        drop_tables(pg_url)
    server = start(tmp_path, store_url=pg_url)
    try:
        yield server
    finally:
        server.stop()
        if pg_url:
            drop_tables(pg_url)


def drop_tables(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS ip_records, ingest_batches")


def test_batches_are_stored_and_counted(hub: Hub) -> None:
    url = hub.url + PATH
    assert call_json(url, "POST", batch(["1.2.3.4", "5.6.7.8"]), headers=AUTH) == (
        200, {"received_count": 2})
    assert call_json(url, "POST", batch(["1.2.3.4"], day="2025-12-10"), headers=AUTH) == (
        200, {"received_count": 1})
    # what `logs test` sends
    assert call_json(url, "POST", batch([]), headers=AUTH) == (200, {"received_count": 0})
    doc = stats(hub)
    assert doc["total_records"] == 3 and doc["distinct_ips"] == 2
    assert [d["date"] for d in doc["per_day"]] == ["2025-12-09", "2025-12-10"]
    assert doc["per_botnet_type"] == {"ramnit": 3}


def test_a_nul_from_a_binary_line_is_stored_not_refused_forever(hub: Hub) -> None:
    """PostgreSQL text cannot hold NUL: a prefix carrying one (a log line of binary junk)
    is stored with U+FFFD in its place instead of failing its batch on every retry."""
    body = batch(["1.2.3.4"])
    body["ip_data"][0]["raw_line_prefix"] = "junk \x00\x01 before 1.2.3.4"
    assert call_json(hub.url + PATH, "POST", body, headers=AUTH) == (200, {"received_count": 1})
    assert stats(hub)["total_records"] == 1


def test_a_repeated_batch_is_acknowledged_and_stored_once(hub: Hub) -> None:
    body = batch(["9.9.9.9", "8.8.8.8", "1.1.1.1"])
    repeat = {**AUTH, "Idempotency-Key": "batch-000001"}
    first = call_json(hub.url + PATH, "POST", body, headers=repeat)
    assert first == (200, {"received_count": 3})
    with ThreadPoolExecutor(8) as pool:  # the same batch, concurrently, from retries
        answers = list(pool.map(
            lambda _: call_json(hub.url + PATH, "POST", body, headers=repeat), range(8)))
    assert set(map(json.dumps, answers)) == {json.dumps([200, {"received_count": 3}])}
    assert stats(hub)["total_records"] == 3
    # counters reach the shared metrics every 0.5 s (core.metrics): the scrape may come
    # from the other worker before its counts are written
    wait_until(lambda: 'datahubsync_logs_batches_total{repeat="true"}' in urllib.request.urlopen(
        hub.url + "/metrics", timeout=10).read().decode(), "the repeat counter in /metrics")


@pytest.mark.parametrize(("body", "field"), [
    (batch(["999.1.1.1"]), "ip_data[0].ip"),
    (batch(["1.2.3"]), "ip_data[0].ip"),
    ({"botnet_type": "ramnit", "ip_data": [{"date": "2025-12-09"}]}, "ip_data[0].ip"),
    ({"botnet_type": "ramnit", "ip_data": "1.2.3.4"}, "ip_data"),
    ({"ip_data": []}, "botnet_type"),
    ({"botnet_type": "x", "ip_data": [{"ip": "1.2.3.4", "log_hour": 24}]}, "ip_data[0].log_hour"),
    ({"botnet_type": "x", "ip_data": [{"ip": "1.2.3.4", "date": "2025-13-01"}]},
     "ip_data[0].date"),
    ([1], "body"),
    (batch(["01.2.3.4"]), "ip_data[0].ip"),  # leading zeros: ambiguous, refused
    (batch(["1.2.3.4\n"]), "ip_data[0].ip"),
    (batch(["\u0661.2.3.4"]), "ip_data[0].ip"),  # a digit, but not an ASCII one
    ({"botnet_type": "x", "ip_data": [{"ip": "1.2.3.4", "date": ["2025-12-09"]}]},
     "ip_data[0].date"),
    ({"botnet_type": "x", "ip_data": [{"ip": "1.2.3.4", "date": "2025-12-09"},
                                      {"ip": "1.2.3.5", "date": "2025-12-9"}]},
     "ip_data[1].date"),
])
def test_bad_batches_get_400_naming_the_field(hub: Hub, body: Any, field: str) -> None:
    status, answer = call_json(hub.url + PATH, "POST", body, headers=AUTH)
    assert status == 400 and answer["field"] == field, answer
    assert stats(hub)["total_records"] == 0


def test_auth_size_and_source_network(tmp_path: Path) -> None:
    hub = start(tmp_path, allowed_networks=["10.0.0.0/8"])
    try:
        url = hub.url + PATH
        assert call_json(url, "POST", batch(["1.2.3.4"]))[0] == 401
        assert call_json(url, "POST", batch(["1.2.3.4"]), headers={"X-API-Key": "k-3f9a1"})[0] \
            == 401
        status, answer = call_json(url, "POST", batch(["1.2.3.4"]), headers=AUTH)
        assert status == 403 and "127.0.0.1" in answer["error"]
        assert KEY not in hub.log.read_text()
    finally:
        hub.stop()
    open_hub = start(tmp_path / "b")
    try:
        big = batch(["1.2.3.4"] * 3000)
        url = open_hub.url + PATH
        assert call_json(url, "POST", big, headers=AUTH)[0] == 413
        assert call_json(url, "POST", raw=b"{nope", headers=AUTH)[0] == 400
        assert call_json(url, "POST", batch(["1.2.3.4"]),
                         headers={**AUTH, "Idempotency-Key": "bad key!"})[0] == 400
    finally:
        open_hub.stop()


def test_no_key_configured_refuses_everyone(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    hub = Hub(tmp_path, tmp_path / "empty").start()
    try:
        assert call_json(hub.url + PATH, "POST", batch(["1.2.3.4"]), headers=AUTH)[0] == 401
    finally:
        hub.stop()


def test_a_body_arriving_in_pieces_is_read_whole(tmp_path: Path) -> None:
    """A 500-record body sent in two writes with a pause between is one batch, not a
    truncated one ("not valid JSON": the body was read only as far as it had arrived)."""
    import socket
    import time
    from urllib.parse import urlsplit

    server = start(tmp_path)
    try:
        ips = [f"{11 + i // 65536}.{(i // 256) % 256}.{i % 256}.7" for i in range(500)]
        body = json.dumps(batch(ips)).encode()
        head = (f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"X-API-Key: {KEY}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        url = urlsplit(server.url)
        with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
            sock.sendall(head + body[:1000])
            time.sleep(0.3)
            sock.sendall(body[1000:])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status = int(answer.split(b" ", 2)[1])
        assert status == 200, answer[-300:]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"received_count": 500}
    finally:
        server.stop()
