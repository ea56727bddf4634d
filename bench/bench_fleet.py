"""Fleet reports at scale: 1 000 simulated hosts into the SQLite and PostgreSQL stores.

For each store: a real ``serve`` (its default workers) takes reports of 1 000
hosts (a realistic ``datasets sync`` document each) from 4 sender threads on
keep-alive connections for ``--seconds``; printed: reports/s stored (1 000 hosts
every 10 s needs 100/s), the page render time with 1 000 hosts measured
server-side (the view and the HTML, in process, median of 5; goal < 200 ms),
the ``/fleet`` round trip, and serve's peak RSS (VmHWM of its processes).

    python bench/bench_fleet.py [--seconds 20] [--stores sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.helpers import Hub, make_dataset  # noqa: E402

PG_URL = os.environ.get("DATAHUBSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def report(host: int, version: str) -> dict:
    now = dt.datetime.now().astimezone()
    return {"host": f"quant-{host:04d}", "version": "0.1.0", "command": "datasets sync",
            "started": (now - dt.timedelta(seconds=40)).isoformat(timespec="seconds"),
            "ended": now.isoformat(timespec="seconds"), "seconds": 40.0, "outcome": "ok",
            "exit_code": 0, "message": "", "details": {"datasets": [
                {"name": n, "status": "up_to_date", "installed": version, "hub": version,
                 "method": "delta", "bytes": 123456, "seconds": 12.5, "message": ""}
                for n in ("stock-trading-data-pro", "stock-fin-data-xbx",
                          "stock-etf-trading-data")]}}


def peak_rss_kib(pid: int) -> int:
    total = 0
    pids = [pid] + [int(p) for p in os.listdir("/proc") if p.isdigit()
                    and _ppid(int(p)) == pid]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def run_store(kind: str, seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"dhs-bench-fleet-{kind}-") as tmp_name:
        tmp = Path(tmp_name)
        make_dataset(tmp / "data" / "stock-trading-data-pro", files=3)
        fleet: dict = {"retention_days": 30}
        if kind == "postgresql":
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS fleet_reports, fleet_alerts")
            fleet["store_url"] = PG_URL
        hub = Hub(tmp, tmp / "data", config_extra={"fleet": fleet}).start()
        try:
            version = hub.wait_ready("stock-trading-data-pro")["last_updated"]
            url = hub.url + "/api/v1/fleet/report"
            bodies = [json.dumps(report(h, version)).encode() for h in range(1000)]
            stored = [0]
            stop = time.monotonic() + seconds
            lock = threading.Lock()

            def sender(offset: int) -> None:
                session = requests.Session()
                n = offset
                while time.monotonic() < stop:
                    r = session.post(url, data=bodies[n % 1000],
                                     headers={"Content-Type": "application/json"}, timeout=30)
                    if r.status_code == 200:
                        with lock:
                            stored[0] += 1
                    n += 4

            threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rate = stored[0] / (time.monotonic() - started)
            trips = []
            for _ in range(5):
                t0 = time.perf_counter()
                requests.get(hub.url + "/fleet", timeout=60).raise_for_status()
                trips.append(time.perf_counter() - t0)
            rss = peak_rss_kib(hub.proc.pid)  # type: ignore[union-attr]
        finally:
            hub.stop()
        render = server_side_render(hub, kind, version)
    return {"store": kind, "reports_per_s": round(rate, 1), "stored": stored[0],
            "page_render_ms_server": round(render * 1000, 1),
            "page_round_trip_ms": round(statistics.median(trips) * 1000, 1),
            "serve_peak_rss_mib": round(rss / 1024, 1)}


def server_side_render(hub: Hub, kind: str, version: str) -> float:
    """The view and the HTML for the stored 1 000 hosts, in process (median of 5)."""
    from datahubsync.fleet.page import fleet_page
    from datahubsync.fleet.routes import FleetService
    from datahubsync.schema import load_config

    loaded = load_config(hub.config, environ={})
    service = FleetService(loaded, lambda: {"stock-trading-data-pro": version}, lambda: [])
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        now = dt.datetime.now().astimezone()
        rows = service.rows(now)
        fleet_page(rows, [], now, "09:00")
        times.append(time.perf_counter() - t0)
    assert len(rows) == 1000, len(rows)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--stores", default="sqlite,postgresql")
    args = parser.parse_args()
    for kind in args.stores.split(","):
        print(json.dumps(run_store(kind, args.seconds)), flush=True)


if __name__ == "__main__":
    main()
