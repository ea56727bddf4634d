"""Batch pg-copy vs psql's \\copy: the same CSV files into PostgreSQL, side by side.

1 000 000 rows across 20 trading days (50 000 per day, 8 columns, ~50 MB of
CSV). Each run loads every day into an empty indexed table:
- ours: ``datahubsync batch run --job bench`` (per day: fresh connection,
  DELETE of that day, COPY, date check, commit; progress file per change);
- reference: one ``psql`` session with one ``\\copy ... FROM file`` per day.
Runs alternate; the median of ``--runs`` is reported with peak RSS
(``/usr/bin/time -v``), rows/s and the ratio. The cost of the progress
bookkeeping per day is measured separately, in-process.

    python bench/bench_batch.py [--runs 3] [--workdir /tmp/dhs-bench-batch]
    DATAHUBSYNC_TEST_PG_URL=postgresql://postgres@127.0.0.1:5432/test (default)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import yaml

ROOT = Path(__file__).resolve().parent.parent
ROWS_PER_DAY = 50_000
DAYS = 20
COLUMNS = "trade_date date, code text, open numeric, high numeric, low numeric, " \
          "close numeric, volume bigint, amount numeric"


def trading_days(count: int) -> list[dt.date]:
    day, found = dt.date(2025, 6, 2), []
    while len(found) < count:
        if day.weekday() < 5:
            found.append(day)
        day += dt.timedelta(days=1)
    return found


def generate(folder: Path, days: list[dt.date]) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    total = 0
    for day in days:
        path = folder / f"{day}.csv"
        if path.exists():
            total += ROWS_PER_DAY
            continue
        lines = ["trade_date,code,open,high,low,close,volume,amount"]
        for i in range(ROWS_PER_DAY):
            base = 5 + rng.random() * 100
            lines.append(f"{day},{600000 + i:06d},{base:.2f},{base * 1.05:.2f},"
                         f"{base * 0.95:.2f},{base * 1.01:.2f},{rng.randint(1000, 10**7)},"
                         f"{base * rng.randint(1000, 10**7):.2f}")
        path.write_text("\n".join(lines) + "\n")
        total += ROWS_PER_DAY
    return total


def reset(url: str, table: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} ({COLUMNS})")
        conn.execute(f"CREATE INDEX ON {table} (trade_date)")


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) and stderr of one process, via /usr/bin/time -v."""
    started = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True,
                          env=env)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return seconds, rss, proc.stderr


def bookkeeping_cost(workdir: Path, days: list[dt.date]) -> float:
    """Seconds per day spent writing the progress document (two atomic writes a day)."""
    sys.path.insert(0, str(ROOT))
    from datahubsync.batch.progress import DayOutcome, ProgressStore, Tracker, new_document

    store = ProgressStore(workdir / "bookkeeping")
    doc = new_document("bench", "bench", "pg-copy", {d.isoformat(): "pending" for d in days},
                       days[0], days[-1], 1, dt.datetime.now().astimezone())
    tracker = Tracker(store, doc)
    tracker.start()
    started = time.perf_counter()
    for day in days:
        tracker.day_started(day.isoformat())
        tracker.day_finished(day.isoformat(), DayOutcome("success", "", ROWS_PER_DAY), 1.0)
    return (time.perf_counter() - started) / len(days)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dhs-bench-batch"))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    url = os.environ.get("DATAHUBSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    psql_url = url
    days = trading_days(DAYS)
    csv_dir = args.workdir / "csv"
    total_rows = generate(csv_dir, days)
    size = sum(p.stat().st_size for p in csv_dir.glob("*.csv"))
    ours_table, ref_table = "bench_batch_ours", "bench_batch_psql"
    calendar = args.workdir / "calendar.txt"
    calendar.write_text("".join(f"{d}\n" for d in days))
    config = args.workdir / "config.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(args.workdir / "state"),
        "batch": {"calendar": str(calendar), "workers": args.workers, "jobs": {"bench": {
            "kind": "pg-copy", "database_url": url, "table": ours_table,
            "date_column": "trade_date", "source": {"glob": str(csv_dir / "{date}.csv")}}}},
    }))
    ours_argv = [sys.executable, "-m", "datahubsync", "--config", str(config), "--json",
                 "batch", "run", "--job", "bench", "--from", str(days[0]), "--to",
                 str(days[-1])]
    psql_argv = ["psql", "-q", "-v", "ON_ERROR_STOP=1", psql_url]
    for day in days:
        psql_argv += ["-c", f"\\copy {ref_table} FROM '{csv_dir / f'{day}.csv'}' "
                            "WITH (FORMAT csv, HEADER true)"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results: dict[str, list[tuple[float, int]]] = {"ours": [], "psql": []}
    print(f"{total_rows} rows, {DAYS} days, {size / 1e6:.1f} MB of CSV; {args.runs} runs, "
          f"alternating; PostgreSQL {url.rsplit('@', 1)[-1]}")
    for run in range(args.runs):
        for name in (("ours", "psql") if run % 2 == 0 else ("psql", "ours")):
            table = ours_table if name == "ours" else ref_table
            reset(url, table)
            seconds, rss, _ = timed(ours_argv if name == "ours" else psql_argv, env)
            loaded = count(url, table)
            assert loaded == total_rows, f"{name} loaded {loaded} rows, not {total_rows}"
            results[name].append((seconds, rss))
            print(f"  run {run + 1} {name:<4} {seconds:6.2f}s  {total_rows / seconds:>9,.0f} "
                  f"rows/s  peak RSS {rss / 1024:.0f} MiB")
    med = {k: statistics.median(s for s, _ in v) for k, v in results.items()}
    rss = {k: max(r for _, r in v) / 1024 for k, v in results.items()}
    per_day = bookkeeping_cost(args.workdir, days)
    ratio = med["psql"] / med["ours"]
    summary = {
        "rows": total_rows, "days": DAYS, "csv_mb": round(size / 1e6, 1),
        "ours_seconds": round(med["ours"], 3), "psql_seconds": round(med["psql"], 3),
        "ours_rows_per_s": round(total_rows / med["ours"]),
        "psql_rows_per_s": round(total_rows / med["psql"]),
        "throughput_ratio": round(ratio, 3), "ours_peak_rss_mib": round(rss["ours"], 1),
        "psql_peak_rss_mib": round(rss["psql"], 1),
        "bookkeeping_ms_per_day": round(per_day * 1000, 2),
    }
    print(f"median: ours {med['ours']:.2f}s ({summary['ours_rows_per_s']:,} rows/s), psql "
          f"{med['psql']:.2f}s ({summary['psql_rows_per_s']:,} rows/s): ours = {ratio:.2f}x "
          f"psql's rows/s (goal >= 0.9x); peak RSS ours {rss['ours']:.0f} MiB, psql "
          f"{rss['psql']:.0f} MiB; progress bookkeeping {per_day * 1000:.1f} ms/day")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / f"batch-workers{args.workers}.json").write_text(json.dumps(summary, indent=2) + "\n")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {ours_table}")
        conn.execute(f"DROP TABLE IF EXISTS {ref_table}")
    return 0 if ratio >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
