"""Shared pieces of the batch tests: a table, a config, CSV days, a slow row source."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import psycopg

from tests.helpers import write_yaml

# Prints a header and N rows for a day, slowly; touches MARKER+day half-way.
SLOW_ROWS = """
import sys, time
day, n, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
marker = sys.argv[4] if len(sys.argv) > 4 else ""
print("trade_date,code,close", flush=True)
for i in range(n):
    print(f"{day},{600000 + i},{10 + i / 100:.2f}", flush=True)
    if marker and i == n // 2:
        open(marker + day, "w").close()
    time.sleep(delay)
"""


def create_table(url: str, table: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (trade_date date NOT NULL, code text NOT NULL, "
                     "close numeric)")
        conn.execute(f"CREATE INDEX ON {table} (trade_date)")


def day_counts(url: str, table: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT trade_date, count(*) FROM {table} GROUP BY 1").fetchall()
    return {d.isoformat(): n for d, n in rows}


def all_rows(url: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()


def distinct_per_day(url: str, table: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT trade_date, count(DISTINCT code) FROM {table} "
                            "GROUP BY 1").fetchall()
    return {d.isoformat(): n for d, n in rows}


def write_day(folder: Path, day: str, rows: int, bad_line: int | None = None) -> Path:
    """A CSV for ``day``; ``bad_line`` (1 = header) gets a non-numeric close."""
    lines = ["trade_date,code,close"]
    for i in range(rows):
        close = "abc" if bad_line == i + 2 else f"{10 + i / 100:.2f}"
        lines.append(f"{day},{600000 + i},{close}")
    path = folder / f"{day}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def days(start: str, end: str) -> list[str]:
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [(first + dt.timedelta(n)).isoformat() for n in range((last - first).days + 1)]


def weekdays(start: str, end: str) -> list[str]:
    return [d for d in days(start, end) if dt.date.fromisoformat(d).weekday() < 5]


def glob_job(url: str, table: str, folder: Path, **extra: Any) -> dict[str, Any]:
    return {"kind": "pg-copy", "database_url": url, "table": table,
            "date_column": "trade_date", "source": {"glob": str(folder / "{date}.csv")},
            **extra}


def slow_job(tmp: Path, url: str, table: str, rows: int = 40, delay: float = 0.05,
             marker: Path | None = None) -> dict[str, Any]:
    script = tmp / "slow_rows.py"
    script.write_text(SLOW_ROWS)
    argv = [sys.executable, str(script), "{date}", str(rows), str(delay)]
    if marker is not None:
        argv.append(str(marker))
    return {"kind": "pg-copy", "database_url": url, "table": table,
            "date_column": "trade_date", "source": {"command": argv}}


def batch_config(tmp: Path, jobs: dict[str, Any], name: str = "batch.yaml",
                 state: str = "state", **batch: Any) -> Path:
    return write_yaml(tmp / name, {"state_dir": str(tmp / state),
                                   "batch": {"jobs": jobs, **batch}})


def task_docs(state_dir: Path) -> list[dict[str, Any]]:
    docs = []
    for path in sorted((state_dir / "batch" / "tasks").glob("*.json")):
        docs.append(json.loads(path.read_text()))
    return docs


def running_day(state_dir: Path) -> tuple[str, str] | None:
    """(task id, day) of the day a task is running, if any."""
    for doc in task_docs(state_dir):
        for day, entry in doc["days"].items():
            if entry["status"] == "running":
                return doc["task_id"], day
    return None
