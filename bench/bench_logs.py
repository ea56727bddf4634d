"""Logs: `logs once` vs `grep | sort -u` on 1 GB of hourly logs; ingest IPs/s into PostgreSQL.

a) Extraction. ``bench/gen_logs.py`` writes ~1 GB of sinkhole-like hourly
   logs. Side by side, alternating: ``datahubsync logs once`` against a local
   ``serve`` (SQLite store; everything read, deduplicated, queued, uploaded,
   acknowledged), with a fresh client state each run, and
   ``LC_ALL=C grep -ohE '<ipv4>' FILES | LC_ALL=C sort -u``. Wall time and
   peak RSS (``/usr/bin/time -v``); goals: ≤ 1.0× grep's time with the defaults,
   ≤ 0.8× with the anchored ``ip_regex``, RSS ≤ 100 MiB.
   ``logs once`` runs twice per round: with the defaults (any digits-and-dots
   run is a candidate) and with ``ip_regex`` anchored on this format's field
   (``from IP:port``), as an operator who knows the line format would set it.
b) Ingest. 4 concurrent clients POST 200 batches of 500 (distinct IPs) each
   to ``serve`` with the PostgreSQL store; stored IPs per second (goal ≥
   50 000) and the server's peak RSS. The clients serialize their bodies
   before the clock starts (``logs`` sends queued JSON text as it is), so
   the figure is the server's, not the script's random-number generation
   on the same two CPUs.

    python bench/bench_logs.py [--mb 1024] [--runs 2] [--workdir /tmp/dhs-bench-logs]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))
import bench_datasets as bd  # noqa: E402
import gen_logs  # noqa: E402

from tests.helpers import Hub, write_yaml  # noqa: E402

KEY = "bench-key"
GREP = r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"


ANCHORED = "from ([0-9][0-9.]{6,})"  # this sinkhole's line format: "... hit from IP:port ..."
VARIANTS = {"ours": {}, "ours-anchored": {"ip_regex": ANCHORED}}
GOALS = {"ours": 1.0, "ours-anchored": 0.8}  # x grep | sort -u


def extraction(work: Path, files: list[Path], runs: int) -> dict[str, object]:
    """``logs once`` with the defaults and with ``ip_regex`` anchored, against grep | sort -u."""
    (work / "empty").mkdir(exist_ok=True)
    # a fresh ingest store: the last runs' records (283 000 a run) would slow `serve`
    shutil.rmtree(work / "hubstate", ignore_errors=True)
    hub = Hub(work, work / "empty", logs_ingest={"api_keys": [KEY]}).start()
    dhs = bd._tool("datahubsync")
    tools = [*VARIANTS, "grep"]
    results: dict[str, list[bd.Measured]] = {tool: [] for tool in tools}
    try:
        for run in range(runs):
            for tool in (tools if run % 2 == 0 else tools[::-1]):
                if tool in VARIANTS:
                    state = work / "client"
                    shutil.rmtree(state, ignore_errors=True)
                    cfg = write_yaml(work / "logs.yaml", {"state_dir": str(state), "logs": {
                        "log_dir": str(files[0].parent), "api_endpoint":
                        f"{hub.url}/api/v1/logs/ips", "api_key": KEY, "stable_seconds": 0,
                        **VARIANTS[tool]}})
                    m = bd.run_timed([dhs, "--config", str(cfg), "--json", "logs", "once"])
                    doc = json.loads(m.stdout)
                    print(f"  run {run + 1} {tool:<13} {m.seconds:6.2f}s  CPU {m.cpu_s:5.1f}s "
                          f"(+ {m.other_cpu_s:4.1f}s serve and the rest)  peak RSS "
                          f"{m.rss_kb / 1024:.0f} MiB  ({doc['ips']} IPs, {doc['uploaded']} "
                          "uploaded)")
                else:
                    names = " ".join(str(f) for f in files)
                    m = bd.run_timed(["sh", "-c", f"LC_ALL=C grep -ohE '{GREP}' {names} | "
                                                  "LC_ALL=C sort -u | wc -l"])
                    print(f"  run {run + 1} grep          {m.seconds:6.2f}s  CPU {m.cpu_s:5.1f}s  "
                          f"({m.stdout.strip()} distinct strings)")
                results[tool].append(m)
    finally:
        hub.stop()
    grep = statistics.median(m.seconds for m in results["grep"])
    summary: dict[str, object] = {
        "grep_seconds": round(grep, 2),
        "grep_cpu_seconds": round(statistics.median(m.cpu_s for m in results["grep"]), 2)}
    for tool in VARIANTS:
        ours = statistics.median(m.seconds for m in results[tool])
        summary[tool] = {"seconds": round(ours, 2), "ratio": round(ours / grep, 3),
                         "cpu_seconds": round(statistics.median(m.cpu_s for m in results[tool]),
                                              2),
                         "peak_rss_mib": round(max(m.rss_kb for m in results[tool]) / 1024, 1)}
    return summary


def _bodies(batches: int, seed: int) -> list[bytes]:
    """A client's request bodies, serialized before the clock starts (as `logs` sends its
    queued JSON text): the figure is the server's, not this script's random numbers."""
    import random

    rng = random.Random(seed)
    return [json.dumps({"botnet_type": "ramnit", "ip_data": [
        {"ip": f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
               f"{rng.randint(1, 254)}", "timestamp": "2025-12-09 16:00:01",
         "timestamp_source": "line", "date": "2025-12-09", "log_hour": 16,
         "botnet_type": "ramnit", "raw_line_prefix": "2025-12-09 16:00:01 hit"}
        for _ in range(500)], "source_ip": "203.0.113.9"}).encode() for _ in range(batches)]


def _client(url: str, batches: int, seed: int, start: Any = None, done: Any = None) -> int:
    import requests

    bodies = _bodies(batches, seed)
    session = requests.Session()
    if start is not None:
        start.wait()  # every client ready: the clock runs from here
    for body in bodies:
        response = session.post(url, data=body, headers={
            "X-API-Key": KEY, "Content-Type": "application/json",
            "Idempotency-Key": uuid.uuid4().hex}, timeout=60)
        response.raise_for_status()
    if done is not None:
        done.put(time.perf_counter())
    return 500 * len(bodies)


def ingest(work: Path, pg_url: str, clients: int = 4, batches: int = 200) -> dict[str, object]:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS ip_records, ingest_batches")
    (work / "empty").mkdir(exist_ok=True)
    (work / "ingest").mkdir(exist_ok=True)
    hub = Hub(work / "ingest", work / "empty", logs_ingest={"api_keys": [KEY],
                                                            "store_url": pg_url})
    hub.start()
    try:
        url = f"{hub.url}/api/v1/logs/ips"
        _client(url, 2, 99)  # warm up: tables, connections
        context = multiprocessing.get_context("fork")
        start, done = context.Barrier(clients + 1), context.Queue()
        procs = [context.Process(target=_client, args=(url, batches, n, start, done))
                 for n in range(clients)]
        for proc in procs:
            proc.start()
        start.wait()
        started = time.perf_counter()
        ended = max(done.get(timeout=600) for _ in procs)
        for proc in procs:
            proc.join()
            if proc.exitcode != 0:
                raise RuntimeError(f"an ingest client failed (exit {proc.exitcode})")
        sent = clients * batches * 500
        seconds = ended - started
        rss = 0
        for pid in bd.process_tree(hub.proc.pid):  # type: ignore[union-attr]
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        rss = max(rss, int(line.split()[1]))
            except OSError:
                pass
        with urllib.request.urlopen(urllib.request.Request(
                f"{hub.url}/api/v1/logs/stats", headers={"X-API-Key": KEY})) as response:
            stored = json.loads(response.read())["total_records"]
    finally:
        hub.stop()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS ip_records, ingest_batches")
    warm_up = 2 * 500
    return {"ips": sent, "stored": stored - warm_up, "seconds": round(seconds, 2),
            "ips_per_second": round(sent / seconds), "server_peak_rss_mib": round(rss / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/dhs-bench-logs"))
    args = ap.parse_args(argv)
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    files = gen_logs.generate(work / "logs", args.mb)
    size = sum(f.stat().st_size for f in files)
    print(f"a) {len(files)} files, {size / 2**20:.0f} MiB")
    a = extraction(work, files, args.runs)
    for tool in VARIANTS:
        ours = a[tool]
        assert isinstance(ours, dict)
        print(f"   median: {tool} {ours['seconds']}s, grep|sort -u {a['grep_seconds']}s: "
              f"{ours['ratio']}x (goal <= {GOALS[tool]}x: "
              f"{'met' if float(ours['ratio']) <= GOALS[tool] else 'NOT met'}); "
              f"CPU {ours['cpu_seconds']}s against "
              f"{a['grep_cpu_seconds']}s; peak RSS {ours['peak_rss_mib']} MiB (goal <= 100)")
    pg_url = os.environ.get("DATAHUBSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    b = ingest(work, pg_url)
    print(f"b) ingest: {b['ips']} IPs from 4 clients in {b['seconds']}s = "
          f"{b['ips_per_second']} IPs/s into PostgreSQL (goal >= 50000); server peak RSS "
          f"{b['server_peak_rss_mib']} MiB")
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "logs.json").write_text(json.dumps({"extraction": a, "ingest": b},
                                                      indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
