"""The client's durable state: one SQLite file (WAL) in ``{state_dir}/logs/``.

It holds the records extracted but not yet acknowledged (the queue), the
offset and identity of every log file, the seen-IP set for dedupe, the batch
in flight with its idempotency key, and counters for ``logs stats``. A chunk's
records and the file's new offset are committed in one transaction, and a
batch leaves the queue only when the server acknowledged it: a kill -9 at any
moment loses nothing, and a batch sent again carries the same key, so the
server stores it once.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, offset INTEGER NOT NULL,
    fp BLOB, done INTEGER NOT NULL DEFAULT 0, updated REAL);
CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen (ip TEXT PRIMARY KEY, last_date TEXT);
CREATE TABLE IF NOT EXISTS batch (one INTEGER PRIMARY KEY CHECK (one = 1), key TEXT NOT NULL,
    last_id INTEGER NOT NULL, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (day TEXT NOT NULL, name TEXT NOT NULL,
    value INTEGER NOT NULL, PRIMARY KEY (day, name));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


@dataclass
class FileState:
    path: str
    dev: int
    ino: int
    offset: int
    fp: bytes
    done: bool


@dataclass
class Batch:
    key: str
    last_id: int
    records: list[dict[str, Any]]


class SeenCache:
    """The recent part of the seen-set in memory (bounded); the whole of it is on disk."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
        return value

    def put(self, key: str, value: str) -> None:
        if self.limit <= 0:
            return
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.limit:
            self.items.popitem(last=False)


class LogQueue:
    """All of the client's state; used from one thread."""

    def __init__(self, path: Path, max_memory_ips: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.cache = SeenCache(max_memory_ips)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> LogQueue:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- files ----------------------------------------------------------------
    def file(self, path: str) -> FileState | None:
        row = self.db.execute("SELECT path, dev, ino, offset, fp, done FROM files WHERE path=?",
                              (path,)).fetchone()
        return FileState(row[0], row[1], row[2], row[3], row[4] or b"", bool(row[5])) \
            if row else None

    def files(self) -> list[FileState]:
        rows = self.db.execute("SELECT path, dev, ino, offset, fp, done FROM files ORDER BY path")
        return [FileState(r[0], r[1], r[2], r[3], r[4] or b"", bool(r[5])) for r in rows]

    # -- one chunk: records, counters and the offset in one transaction ----------
    def commit_chunk(self, state: FileState, records: Iterable[dict[str, Any]],
                     counts: dict[tuple[str, str], int], seen: dict[str, str]) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO queue (record) VALUES (?)",
                           ((json.dumps(r, ensure_ascii=False),) for r in records))
            db.executemany("INSERT INTO seen (ip, last_date) VALUES (?, ?) ON CONFLICT(ip) DO "
                           "UPDATE SET last_date = excluded.last_date", seen.items())
            db.executemany("INSERT INTO counters VALUES (?, ?, ?) ON CONFLICT(day, name) DO "
                           "UPDATE SET value = value + excluded.value",
                           ((day, name, n) for (day, name), n in counts.items()))
            db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO "
                       "UPDATE SET dev=excluded.dev, ino=excluded.ino, offset=excluded.offset, "
                       "fp=excluded.fp, done=excluded.done, updated=excluded.updated",
                       (state.path, state.dev, state.ino, state.offset, state.fp,
                        int(state.done), time.time()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        for ip, day in seen.items():
            self.cache.put(ip, day)

    def last_seen_many(self, keys: list[str]) -> dict[str, str]:
        """The dates of the keys seen before (cache first, then the disk, 900 at a time)."""
        found: dict[str, str] = {}
        missing = []
        for key in keys:
            cached = self.cache.get(key)
            if cached is not None:
                found[key] = cached
            else:
                missing.append(key)
        for start in range(0, len(missing), 900):
            part = missing[start:start + 900]
            rows = self.db.execute(f"SELECT ip, last_date FROM seen WHERE ip IN "
                                   f"({', '.join('?' * len(part))})", part).fetchall()
            for key, day in rows:
                found[key] = day
                self.cache.put(key, day)
        return found

    def last_seen(self, key: str) -> str | None:
        """The date an IP (or IP|date key) was last queued, or None if never."""
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        row = self.db.execute("SELECT last_date FROM seen WHERE ip = ?", (key,)).fetchone()
        if row is not None:
            self.cache.put(key, row[0])
            return str(row[0])
        return None

    # -- batches -----------------------------------------------------------------
    def depth(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM queue").fetchone()[0])

    def next_batch(self, size: int) -> Batch | None:
        """The batch in flight (same key as before a crash), else the next one."""
        row = self.db.execute("SELECT key, last_id FROM batch").fetchone()
        if row is not None:
            key, last_id = row
            records = [json.loads(r) for (r,) in self.db.execute(
                "SELECT record FROM queue WHERE id <= ? ORDER BY id", (last_id,))]
            if records:
                return Batch(key, last_id, records)
            self.db.execute("DELETE FROM batch")
        rows = self.db.execute("SELECT id, record FROM queue ORDER BY id LIMIT ?",
                               (size,)).fetchall()
        if not rows:
            return None
        batch = Batch(uuid.uuid4().hex, rows[-1][0], [json.loads(r) for _, r in rows])
        self.db.execute("INSERT INTO batch VALUES (1, ?, ?, ?)",
                        (batch.key, batch.last_id, len(rows)))
        return batch

    def acknowledge(self, batch: Batch, day: str) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM queue WHERE id <= ?", (batch.last_id,))
        db.execute("DELETE FROM batch")
        db.execute("INSERT INTO counters VALUES (?, 'uploaded', ?) ON CONFLICT(day, name) DO "
                   "UPDATE SET value = value + excluded.value", (day, len(batch.records)))
        db.execute("INSERT OR REPLACE INTO meta VALUES ('last_upload', ?)",
                   (time.strftime("%Y-%m-%dT%H:%M:%S%z"),))
        db.execute("COMMIT")

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def counters(self) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for day, name, value in self.db.execute("SELECT day, name, value FROM counters "
                                                "ORDER BY day"):
            found.setdefault(day, {})[name] = value
        return found

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += Path(str(self.path) + suffix).stat().st_size
            except FileNotFoundError:
                pass
        return total
