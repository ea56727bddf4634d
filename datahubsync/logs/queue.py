"""The client's durable state: one SQLite file (WAL) in ``{state_dir}/logs/``.

It holds the records extracted but not yet acknowledged (the queue), the
offset and identity of every log file, the seen-IP set for dedupe, the batch
in flight with its idempotency key, and counters for ``logs stats``. A chunk's
records, its seen-set rows and the file's new offset are committed in one
transaction, and a batch leaves the queue only when the server acknowledged
it: a kill -9 at any moment loses nothing, and a batch sent again carries the
same key, so the server stores it once.

The seen-set is a B-tree keyed by address (``seen_ip``); a chunk's new
addresses land on pages all over it, so writing them there at each commit
wrote (and checkpointed) a third of the tree per chunk: 1.3 GB for a day
of 280 000 new addresses (``bench/bench_seen_set.py``; 67 MiB now). They
are appended to ``seen_new`` instead (a page per ~300 rows), kept in memory
by the reader's connection, and merged into ``seen_ip`` in key order every
MERGE_AT rows, at the end of a pass, and at the start of the next one
(``logs.service.one_pass``: the only writer, under the state lock), which
takes in what a killed pass left behind.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from datahubsync.core.crashpoint import CrashPoint
from datahubsync.core.db import sqlite_connect

CHUNK_COMMITTED = CrashPoint("logs.chunk_committed",
                             "a chunk's records, seen-set and offset committed")
SEEN_MERGED = CrashPoint("logs.seen_merged", "the appended seen-set rows merged into the set")
MERGE_AT = 50_000  # appended seen-set rows held (and kept in memory) before a merge
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, offset INTEGER NOT NULL,
    fp BLOB, done INTEGER NOT NULL DEFAULT 0, updated REAL);
CREATE TABLE IF NOT EXISTS queue (id INTEGER PRIMARY KEY AUTOINCREMENT, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen_ip (key INTEGER PRIMARY KEY, last_day INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen_new (key INTEGER NOT NULL, last_day INTEGER NOT NULL);
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
    texts: list[str]  # the records as queued: JSON objects, sent as they are

    def __len__(self) -> int:
        return len(self.texts)


def day_number(day: str) -> int:
    """``YYYY-MM-DD`` as the integer the seen-set stores (proleptic ordinal)."""
    return dt.date.fromisoformat(day).toordinal()


def day_text(number: int) -> str:
    return dt.date.fromordinal(number).isoformat()


class LogQueue:
    """All of the client's state; used from one thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # NORMAL in WAL mode: a commit survives a kill -9 of this process; a power cut may
        # lose the last commits, and with them their offsets, so those lines are read again.
        self.db = sqlite_connect(self.path, "normal")
        self.db.executescript(SCHEMA)
        self._migrate_text_seen_set()
        self._depth: int | None = None
        self._appended: dict[int, int] = {}  # seen-set rows this connection appended

    def _migrate_text_seen_set(self) -> None:
        """Earlier releases kept the seen-set as text (``ip`` or ``ip|day``)."""
        if self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'seen'"
                           ).fetchone() is None:
            return
        rows = []
        for key, last in self.db.execute("SELECT ip, last_date FROM seen"):
            ip, _, day = str(key).partition("|")
            a, b, c, d = (int(x) for x in ip.split("."))
            value = (a << 24) | (b << 16) | (c << 8) | d
            rows.append(((day_number(day) << 32) | value if day else value, day_number(last)))
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT OR REPLACE INTO seen_ip VALUES (?, ?)", rows)
        self.db.execute("DROP TABLE seen")
        self.db.execute("COMMIT")

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
    def commit_chunk(self, state: FileState, records: Iterable[str],
                     counts: dict[tuple[str, str], int], seen: dict[int, int]) -> None:
        """``records`` are JSON texts; ``seen`` maps seen-set keys to their day number."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            added = db.executemany("INSERT INTO queue (record) VALUES (?)",
                                   ((r,) for r in records)).rowcount
            db.executemany("INSERT INTO seen_new (key, last_day) VALUES (?, ?)", seen.items())
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
            if db.in_transaction:  # a Ctrl-C can land before BEGIN took or after COMMIT
                db.execute("ROLLBACK")
            raise
        CHUNK_COMMITTED.reached()
        if self._depth is not None:
            self._depth += max(added, 0)
        self._appended.update(seen)
        if len(self._appended) >= MERGE_AT:
            self.merge_seen()

    def merge_seen(self) -> int:
        """Move the appended seen-set rows into ``seen_ip`` (the last row of a key wins, as
        an upsert per chunk did), in key order: each page of the set is written once.
        Returns how many rows were merged."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            merged = db.execute("SELECT count(*) FROM seen_new").fetchone()[0]
            if merged:
                db.execute("INSERT INTO seen_ip (key, last_day) SELECT key, last_day FROM "
                           "seen_new WHERE rowid IN (SELECT max(rowid) FROM seen_new GROUP BY "
                           "key) ORDER BY key ON CONFLICT(key) DO UPDATE SET "
                           "last_day = excluded.last_day")
                db.execute("DELETE FROM seen_new")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if merged:
            SEEN_MERGED.reached()
        self._appended.clear()
        return int(merged)

    def add_records(self, records: Iterable[str]) -> int:
        """Queue records that come from no log file (the old uploader's pending queue)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        added = db.executemany("INSERT INTO queue (record) VALUES (?)",
                               ((r,) for r in records)).rowcount
        db.execute("COMMIT")
        if self._depth is not None:
            self._depth += max(added, 0)
        return max(added, 0)

    def last_seen_many(self, keys: list[int]) -> dict[int, int]:
        """The day numbers of the seen-set keys found (one query for those not appended by
        this connection since its last merge; the reader merged what others left)."""
        appended = self._appended
        found = {k: appended[k] for k in keys if k in appended}
        rest = [k for k in keys if k not in found] if found else keys
        if rest:
            found.update(self.db.execute(
                "SELECT key, last_day FROM seen_ip WHERE key IN (SELECT value FROM json_each(?))",
                (f"[{','.join(map(str, rest))}]",)).fetchall())
        return found

    # -- batches -----------------------------------------------------------------
    def recount(self) -> None:
        """Forget the kept depth: another connection (the upload thread) changed the queue."""
        self._depth = None

    def depth(self) -> int:
        """Records queued. Counted once, then kept up to date by this object's commits and
        acknowledgements (it is the only writer: the command holds the state lock); a
        count(*) after every chunk was 1 % of a pass."""
        if self._depth is None:
            self._depth = int(self.db.execute("SELECT count(*) FROM queue").fetchone()[0])
        return self._depth

    def next_batch(self, size: int) -> Batch | None:
        """The batch in flight (same key as before a crash), else the next one."""
        row = self.db.execute("SELECT key, last_id FROM batch").fetchone()
        if row is not None:
            key, last_id = row
            texts = [r for (r,) in self.db.execute(
                "SELECT record FROM queue WHERE id <= ? ORDER BY id", (last_id,))]
            if texts:
                return Batch(key, last_id, texts)
            self.db.execute("DELETE FROM batch")
        rows = self.db.execute("SELECT id, record FROM queue ORDER BY id LIMIT ?",
                               (size,)).fetchall()
        if not rows:
            return None
        batch = Batch(uuid.uuid4().hex, rows[-1][0], [r for _, r in rows])
        self.db.execute("INSERT INTO batch VALUES (1, ?, ?, ?)",
                        (batch.key, batch.last_id, len(rows)))
        return batch

    def acknowledge(self, batch: Batch, day: str) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        removed = db.execute("DELETE FROM queue WHERE id <= ?", (batch.last_id,)).rowcount
        db.execute("DELETE FROM batch")
        db.execute("INSERT INTO counters VALUES (?, 'uploaded', ?) ON CONFLICT(day, name) DO "
                   "UPDATE SET value = value + excluded.value", (day, len(batch)))
        db.execute("INSERT OR REPLACE INTO meta VALUES ('last_upload', ?)",
                   (str(time.time()),))  # epoch seconds, as every state file keeps moments
        db.execute("INSERT OR REPLACE INTO meta VALUES ('upload_errors', '0')")
        db.execute("COMMIT")
        if self._depth is not None:
            self._depth -= max(removed, 0)

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

    def note_upload_failure(self, day: str) -> int:
        """An upload that failed after its retries: counted in a row (for health, reset by
        the next acknowledged batch) and per day (for stats). Returns the run length."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT value FROM meta WHERE key = 'upload_errors'").fetchone()
        errors = int(row[0]) + 1 if row and str(row[0]).isdigit() else 1
        db.execute("INSERT OR REPLACE INTO meta VALUES ('upload_errors', ?)", (str(errors),))
        db.execute("INSERT INTO counters VALUES (?, 'upload_failures', 1) ON CONFLICT(day, name) "
                   "DO UPDATE SET value = value + 1", (day,))
        db.execute("COMMIT")
        return errors

    def pending_bytes(self) -> int:
        """The size of what waits to be sent (the records, not the file: the file also
        holds the seen-set, which grows with every distinct address ever sent)."""
        return int(self.db.execute("SELECT coalesce(sum(length(record)), 0) FROM queue")
                   .fetchone()[0])

    def oldest_pending(self) -> str | None:
        row = self.db.execute("SELECT record FROM queue ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else None

    def cached_ips(self) -> int:
        """Addresses in the seen-set (sent before: not sent again under dedupe)."""
        return int(self.db.execute(
            "SELECT (SELECT count(*) FROM seen_ip) + (SELECT count(DISTINCT key) FROM seen_new "
            "WHERE key NOT IN (SELECT key FROM seen_ip))").fetchone()[0])

    def purge(self) -> int:
        """Drop every record waiting to be sent (and the batch in flight); returns how many.
        Their addresses stay in the seen-set, so they are not read and sent again."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        removed = db.execute("DELETE FROM queue").rowcount
        db.execute("DELETE FROM batch")
        db.execute("COMMIT")
        self._depth = 0
        return max(removed, 0)

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            try:
                total += Path(str(self.path) + suffix).stat().st_size
            except FileNotFoundError:
                pass
        return total
