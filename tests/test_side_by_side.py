"""Two `serve` instances side by side over one PostgreSQL (and behind one nginx front):
a batch retried against the other instance is stored once, pushed picture ids stay
unique, one batch task per target, a fleet report lands once."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import Hub, call_json, make_dataset, run_cli, wait_until

KEY = "k-side"
TOKEN = "t-side"


@pytest.fixture
def pair(tmp_path: Path, pg_url: str, pg_table: str) -> Iterator[tuple[Hub, Hub, str]]:
    prefix = f"sbs_{uuid.uuid4().hex[:8]}"
    make_dataset(tmp_path / "data" / "alpha", files=2)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for table in ("ip_records", "ingest_batches", "pic_tasks", "pic_files", "pic_cursor",
                      "pic_meta", "pic_photo_ids", "fleet_reports", "fleet_alerts"):
            conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
        conn.execute(f"CREATE TABLE {pg_table} (trade_date date, code text, close numeric)")
    script = tmp_path / "slow.sh"
    script.write_text("sleep 30\n")
    jobs = {"slow": {"kind": "command", "command": ["sh", str(script), "{date}"],
                     "target": f"{prefix}-target"}}
    hubs = []
    for name in ("a", "b"):
        home = tmp_path / name
        home.mkdir()
        hubs.append(Hub(home, tmp_path / "data", workers=2, api_tokens=[TOKEN],
                        trusted_proxies=["127.0.0.1/32"],
                        logs_ingest={"api_keys": [KEY], "store_url": pg_url},
                        config_extra={
                            "state_dir": str(home / "state"),
                            "pictures": {"source": "push", "ledger_url": pg_url},
                            "fleet": {"store_url": pg_url},
                            "batch": {"jobs": jobs, "lock": "postgres", "lock_url": pg_url}}
                        ).start())
    try:
        yield hubs[0], hubs[1], pg_url
    finally:
        for hub in hubs:
            hub.stop()


def test_ingest_idempotency_holds_across_instances(pair: tuple[Hub, Hub, str]) -> None:
    a, b, _ = pair
    body = {"botnet_type": "ramnit", "ip_data": [{"ip": f"8.8.{n}.1"} for n in range(50)]}
    headers = {"X-API-Key": KEY, "Idempotency-Key": "batch-0001"}
    assert call_json(a.url + "/api/v1/logs/ips", "POST", body, headers=headers) == (
        200, {"received_count": 50})
    # the client's answer got lost; it retries against the other instance
    assert call_json(b.url + "/api/v1/logs/ips", "POST", body, headers=headers) == (
        200, {"received_count": 50})
    status, stats = call_json(b.url + "/api/v1/logs/stats", headers={"X-API-Key": KEY})
    assert stats["total_records"] == 50 and stats["batches"] == 1


def test_pushed_picture_ids_stay_unique_across_instances(pair: tuple[Hub, Hub, str]) -> None:
    a, b, pg_url = pair
    failures: list[Any] = []

    def sender(hub: Hub, first: int) -> None:
        for n in range(first, 200, 4):
            status, _ = call_json(hub.url + "/api/v1/pictures/tasks", "POST", {
                "photoUrl": f"http://127.0.0.1:9/p{n}.jpg", "callTime": f"t{n}",
                "cameraCode": "C"}, token=TOKEN)
            if status != 200:
                failures.append((n, status))

    threads = [threading.Thread(target=sender, args=(hub, i))
               for i, hub in enumerate((a, b, a, b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with psycopg.connect(pg_url) as conn:
        ids = [r[0] for r in conn.execute(
            "SELECT task_id FROM pic_tasks WHERE source = 'sender'").fetchall()]
    assert len(ids) == 200 and len(set(ids)) == 200


def test_one_batch_task_per_target_across_instances(pair: tuple[Hub, Hub, str]) -> None:
    a, b, _ = pair
    body = {"start_date": "2025-10-06", "end_date": "2025-10-06", "job": "slow"}
    status, doc = call_json(a.url + "/api/v1/sync-status/sync/batch", "POST", body)
    assert status == 200, doc
    status, refused = call_json(b.url + "/api/v1/sync-status/sync/batch", "POST", body)
    assert status == 409 and doc["data"]["task_id"] in refused["message"]
    call_json(f"{a.url}/api/v1/sync-status/sync/batch/{doc['data']['task_id']}/cancel",
              "POST")


def test_a_fleet_report_lands_once_and_both_show_it(tmp_path: Path,
                                                   pair: tuple[Hub, Hub, str]) -> None:
    a, b, _ = pair
    a.wait_ready("alpha")
    from tests.helpers import write_yaml

    cfg = write_yaml(tmp_path / "c.yaml", {
        "state_dir": str(tmp_path / "client"), "hub": {"url": a.url}, "sync": {"fsync": False},
        "datasets": [{"name": "alpha", "local_dir": str(tmp_path / "l" / "alpha")}],
        "fleet": {"host": "h1"}})
    run_cli(["datasets", "sync"], config=cfg)
    wait_until(lambda: any(h["host"] == "h1" for h in call_json(b.url + "/api/v1/fleet")[1]
                           ["hosts"]), "the report seen through the other instance")
    history = call_json(b.url + "/fleet/host/h1")[1]
    assert json.dumps(history).count("datasets sync") == 1


def test_behind_one_nginx_front_both_instances_answer(tmp_path: Path,
                                                      pair: tuple[Hub, Hub, str]) -> None:
    from tests.test_nginx import _start_nginx, require_nginx

    require_nginx()
    a, b, pg_url = pair
    upstream = ",".join(h.url.removeprefix("http://") for h in (a, b))
    port, proc, access_log = _start_nginx(tmp_path, a, upstream)
    front = f"http://127.0.0.1:{port}"
    try:
        for n in range(20):  # each batch sent twice, the second maybe to the other instance
            body = {"botnet_type": "ramnit", "ip_data": [{"ip": f"9.9.{n}.1"}]}
            headers = {"X-API-Key": KEY, "Idempotency-Key": f"front-{n}"}
            for _ in range(2):
                assert call_json(front + "/api/v1/logs/ips", "POST", body,
                                 headers=headers)[0] == 200
            assert call_json(front + "/api/v1/pictures/tasks", "POST", {
                "photoUrl": f"http://127.0.0.1:9/f{n}.jpg", "cameraCode": "C"},
                token=TOKEN)[0] == 200
    finally:
        proc.terminate()
        proc.wait(30)
    used = {line.split()[-1] for line in access_log.read_text().splitlines()
            if "/api/v1/" in line}
    assert {h.url.removeprefix("http://") for h in (a, b)} <= used  # both took requests
    stats = call_json(a.url + "/api/v1/logs/stats", headers={"X-API-Key": KEY})[1]
    assert stats["total_records"] == 20 and stats["batches"] == 20
    with psycopg.connect(pg_url) as conn:
        ids = [r[0] for r in conn.execute("SELECT task_id FROM pic_tasks").fetchall()]
    assert len(ids) == len(set(ids)) == 20


def test_instances_starting_at_once_create_the_tables_once(pg_url: str) -> None:
    """Concurrent CREATE TABLE IF NOT EXISTS of one table collide in PostgreSQL's catalog;
    the stores take turns (found as a 500 on the first push to two fresh instances)."""
    from datahubsync.core.reportstore import ReportStore
    from datahubsync.logs.ingest_store import PgIngestStore
    from datahubsync.pictures.ledger import Ledger

    errors: list[BaseException] = []
    for make in (lambda: Ledger(pg_url), lambda: ReportStore(pg_url),
                 lambda: PgIngestStore(pg_url)):
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for table in ("pic_tasks", "pic_files", "pic_cursor", "pic_meta", "pic_photo_ids",
                          "fleet_reports", "fleet_alerts", "ip_records", "ingest_batches"):
                conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
        barrier = threading.Barrier(6)

        def start(factory: Any = make, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                factory().close()
            except BaseException as exc:  # noqa: BLE001 - collected for the assert
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
