"""Delta sync vs full-package sync vs ``rsync -az`` on one simulated trading day.

A ``stock-trading-data-pro``-shaped dataset (5 600 CSV, ~615 MB at scale 1)
is served by ``datahubsync serve``; two clients and an rsync mirror start at
the same version. Each "day" appends one row to every CSV; once the hub has
published the new version (with its delta), three updates run back to back,
in alternating order:

- *delta*: ``datahubsync datasets sync`` (uses the hub's delta);
- *full*: the same with ``sync.delta: false`` (downloads the whole package);
- *rsync*: ``rsync -az --stats rsync://127.0.0.1:PORT/data/ mirror/`` against
  an rsync daemon on loopback serving the data directory (Debian's rsync).

Reported per tool: bytes transferred (ours: ``bytes_downloaded``; rsync: its
"Total bytes received"), wall time and peak RSS (``/usr/bin/time -v``); the
median over ``--days``. Goals (issue 8): delta bytes ≤ 2 % of the full package
and ≤ 1.5× rsync's; delta wall time ≤ rsync's. Each tool's result is checked
byte for byte against the hub's data on the last day.

    python bench/bench_delta.py [--scale 1.0] [--days 3] [--workdir /tmp/dhs-bench-delta]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_datasets as bd  # noqa: E402
import gen_dataset  # noqa: E402

MAIN = bd.MAIN
ROW = b"2026-11-24,10.00,10.20,9.90,10.10,123400,1246340.00\r\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RsyncDaemon:
    """``rsync --daemon`` on 127.0.0.1 serving ``root`` read-only as module ``data``."""

    def __init__(self, work: Path, root: Path) -> None:
        self.port = free_port()
        conf = work / "rsyncd.conf"
        conf.write_text(f"use chroot = no\nuid = root\ngid = root\n[data]\n  path = {root}\n"
                        "  read only = yes\n")
        self.proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={conf}",
                                      f"--port={self.port}", "--address=127.0.0.1",
                                      f"--log-file={work / 'rsyncd.log'}"])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"rsync://127.0.0.1:{self.port}/data/"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def append_day(root: Path) -> int:
    """One trading day: a row at the end of every CSV (mtime moves forward)."""
    later = time.time() + 5
    count = 0
    for path in root.rglob("*.csv"):
        with open(path, "ab") as fh:
            fh.write(ROW)
        os.utime(path, (later, later))
        count += 1
    return count


def wait_version(hub: bd.Hub, previous: str, timeout: float = 1800) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = {d["name"]: d for d in hub.catalog()["datasets"]}[MAIN]
        if entry["version"] != previous and entry["deltas"]:
            return entry
        time.sleep(0.5)
    raise RuntimeError("the hub did not publish the new version with a delta")


def sync_json(m: bd.Measured) -> dict[str, Any]:
    return {d["name"]: d for d in json.loads(m.stdout)["datasets"]}[MAIN]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/dhs-bench-delta"))
    args = ap.parse_args(argv)
    work = args.workdir
    for sub in ("hubstate", "delta", "full", "mirror", "data"):
        shutil.rmtree(work / sub, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data"
    gen_dataset.generate(data, MAIN, args.scale, gen_dataset.DEFAULT_SEED, reuse=False)
    dataset = data / MAIN
    files = sum(1 for _ in dataset.rglob("*.csv"))
    raw = sum(p.stat().st_size for p in dataset.rglob("*.csv"))
    dhs = bd._tool("datahubsync")
    hub = bd.Hub(work, data)
    # the hub must notice each day's update at once (production checks every 600 s)
    hub.cfg.write_text(hub.cfg.read_text().replace("check_interval: 600", "check_interval: 1"))
    rsyncd = RsyncDaemon(work, dataset)
    try:
        hub.start([MAIN])
        clients = {}
        for name, delta in (("delta", True), ("full", False)):
            cfg = bd.client_yaml(work / f"{name}.yaml", work / name / "state", hub.url,
                                 {MAIN: work / name / MAIN})
            if not delta:
                cfg.write_text(cfg.read_text().replace("sync: {fsync: false}",
                                                       "sync: {fsync: false, delta: false}"))
            clients[name] = cfg
            subprocess.run([dhs, "--config", str(cfg), "datasets", "sync"], check=True,
                           env=bd.child_env(), capture_output=True)
        mirror = work / "mirror" / MAIN
        mirror.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["rsync", "-a", f"{dataset}/", f"{mirror}/"], check=True)
        version = {d["name"]: d for d in hub.catalog()["datasets"]}[MAIN]["version"]
        rows: dict[str, list[dict[str, float]]] = {"delta": [], "full": [], "rsync": []}
        package_sizes = []
        print(f"{files} CSV files, {raw / 1e6:.0f} MB; {args.days} simulated days")
        for day in range(args.days):
            append_day(dataset)
            entry = wait_version(hub, version)
            version = entry["version"]
            package_sizes.append(entry["package_size"])
            order = ["delta", "full", "rsync"] if day % 2 == 0 else ["rsync", "full", "delta"]
            for tool in order:
                if tool == "rsync":
                    m = bd.run_timed(["rsync", "-az", "--stats", rsyncd.url, f"{mirror}/"],
                                     label="rsync")
                    got = re.search(r"Total bytes received: ([\d,]+)", m.stdout)
                    sent = int(got.group(1).replace(",", "")) if got else -1
                else:
                    m = bd.run_timed([dhs, "--config", str(clients[tool]), "--json",
                                      "datasets", "sync"], label=tool)
                    result = sync_json(m)
                    assert result["method"] == tool, result
                    sent = result["bytes_downloaded"]
                rows[tool].append({"bytes": sent, "seconds": m.seconds,
                                   "rss_mb": m.rss_kb / 1024})
                print(f"  day {day + 1} {tool:<5} {sent:>12,} bytes  {m.seconds:6.2f}s  "
                      f"peak RSS {m.rss_kb / 1024:.0f} MiB")
        for tool, where in (("delta", work / "delta" / MAIN), ("full", work / "full" / MAIN),
                            ("rsync", mirror)):
            problem = bd.same_tree(dataset, where)
            if problem:
                raise SystemExit(f"{tool}: result differs from the hub's data: {problem}")
    finally:
        hub.stop()
        rsyncd.stop()
    med = {t: {k: bd.med([r[k] for r in v]) for k in ("bytes", "seconds", "rss_mb")}
           for t, v in rows.items()}
    # Day 1 is the first update after a fresh install: no kept version is obsolete yet,
    # so the delta builds a whole new tree. From day 2 on (keep_previous 1, the default)
    # the version from two days ago is adopted and brought up to date: the steady state.
    first = {t: v[0]["seconds"] for t, v in rows.items()}
    steady = {t: bd.med([r["seconds"] for r in v[1:]]) for t, v in rows.items()} \
        if args.days > 1 else None
    package = bd.med(package_sizes)
    summary = {
        "files": files, "raw_mb": round(raw / 1e6, 1), "days": args.days,
        "package_bytes": package, "median": med,
        "delta_bytes_share_of_package": round(med["delta"]["bytes"] / package, 5),
        "delta_bytes_vs_rsync": round(med["delta"]["bytes"] / med["rsync"]["bytes"], 3),
        "delta_time_vs_rsync": round(med["delta"]["seconds"] / med["rsync"]["seconds"], 3),
        "full_time_vs_rsync": round(med["full"]["seconds"] / med["rsync"]["seconds"], 3),
        "day1_seconds": first,
        "day1_delta_time_vs_rsync": round(first["delta"] / first["rsync"], 3),
        "steady_seconds": steady,
        "steady_delta_time_vs_rsync":
            round(steady["delta"] / steady["rsync"], 3) if steady else None,
    }
    print(f"median: delta {med['delta']['bytes']:,.0f} bytes = "
          f"{summary['delta_bytes_share_of_package']:.2%} of the package (goal <= 2%), "
          f"{summary['delta_bytes_vs_rsync']:.2f}x rsync's bytes (goal <= 1.5x); "
          f"time {summary['delta_time_vs_rsync']:.2f}x rsync's (goal <= 1.0x); "
          f"full package {summary['full_time_vs_rsync']:.2f}x rsync's time")
    print(f"day 1 (fresh install, nothing to adopt): delta {first['delta']:.2f}s, rsync "
          f"{first['rsync']:.2f}s ({summary['day1_delta_time_vs_rsync']:.2f}x)")
    if steady:
        print(f"days 2..{args.days} (steady state, median): delta {steady['delta']:.2f}s, "
              f"rsync {steady['rsync']:.2f}s ({summary['steady_delta_time_vs_rsync']:.2f}x)")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "delta.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
