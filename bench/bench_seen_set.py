"""The logs seen-set's write pattern: an upsert per chunk against appending and merging.

A pass over the bench's logs (``bench_logs.py``) commits 1 032 chunks and
finds 283 000 new addresses, ~275 a chunk, at random places in the key space.
This replays that on SQLite as the queue opens it (WAL, ``synchronous=NORMAL``):

- ``upsert``: each chunk upserts its keys into the B-tree (what the queue did);
- ``append``: each chunk appends its keys to ``seen_new``, merged into the
  B-tree in key order every 50 000 rows (what it does now).

The reference is the queue's previous way, not another tool: this is the
figure behind that design choice. Prints wall time, CPU, the bytes this
process wrote (``/proc/self/io``), the ratio and the peak RSS.

    python bench/bench_seen_set.py [--chunks 1032] [--per-chunk 275] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import random
import resource
import sqlite3
import tempfile
import time
from pathlib import Path

DAY = 739_594
MERGE = ("INSERT INTO seen_ip (key, last_day) SELECT key, last_day FROM seen_new WHERE rowid IN "
         "(SELECT max(rowid) FROM seen_new GROUP BY key) ORDER BY key ON CONFLICT(key) DO "
         "UPDATE SET last_day = excluded.last_day")
UPSERT = ("INSERT INTO seen_ip (key, last_day) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
          "last_day = excluded.last_day")


def written() -> int:
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("wchar"))


def replay(path: Path, mode: str, chunks: int, per_chunk: int, merge_at: int) -> dict[str, float]:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE seen_ip (key INTEGER PRIMARY KEY, last_day INTEGER NOT NULL)")
    db.execute("CREATE TABLE seen_new (key INTEGER NOT NULL, last_day INTEGER NOT NULL)")
    keys = iter(random.Random(1).sample(range(1 << 32), chunks * per_chunk))
    appended = 0
    w0, t0, c0 = written(), time.perf_counter(), time.process_time()
    for _ in range(chunks):
        rows = [((DAY << 32) | next(keys), DAY) for _ in range(per_chunk)]
        db.execute("BEGIN IMMEDIATE")
        if mode == "upsert":
            db.executemany(UPSERT, rows)
        else:
            db.executemany("INSERT INTO seen_new VALUES (?, ?)", rows)
            appended += len(rows)
        db.execute("COMMIT")
        if mode == "append" and appended >= merge_at:
            db.execute("BEGIN IMMEDIATE")
            db.execute(MERGE)
            db.execute("DELETE FROM seen_new")
            db.execute("COMMIT")
            appended = 0
    db.close()
    return {"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "mib_written": (written() - w0) / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=1032)
    ap.add_argument("--per-chunk", type=int, default=275)
    ap.add_argument("--merge-at", type=int, default=50_000)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args()
    results = {}
    for mode in ("upsert", "append"):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            results[mode] = r = replay(Path(tmp) / "queue.db", mode, args.chunks,
                                       args.per_chunk, args.merge_at)
        print(f"{mode:7s} {r['seconds']:6.2f} s  CPU {r['cpu']:5.2f} s  "
              f"{r['mib_written']:7.0f} MiB written")
    up, ap_ = results["upsert"], results["append"]
    print(f"append/upsert: {ap_['seconds'] / up['seconds']:.2f}x the time, "
          f"{ap_['mib_written'] / up['mib_written']:.3f}x the bytes; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
