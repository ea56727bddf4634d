"""Where ``serve`` keeps the IP records it receives: SQLite (default) or PostgreSQL.

A batch and its idempotency key are stored in one transaction: a batch sent
twice (the client crashed after the server answered, or a retry after a
timeout) is acknowledged again with its first answer and stored once.
SQLite runs in WAL mode with a busy timeout, so the forked workers of
``serve`` can all write to it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from datahubsync.core.db import ThreadConnections, pg_connect, pg_create_lock, sqlite_connect
from datahubsync.core.timeutil import iso_time

COLUMNS = ("ip", "timestamp", "timestamp_source", "date", "log_hour", "botnet_type",
           "raw_line_prefix", "source_ip", "received_at")


class IngestStore(Protocol):
    def store(self, key: str | None, rows: Sequence[tuple[Any, ...]]) -> tuple[int, bool]: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


class SqliteIngestStore:
    """One SQLite file; a connection per thread that uses it."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS ip_records (
        id INTEGER PRIMARY KEY, ip TEXT NOT NULL, timestamp TEXT, timestamp_source TEXT,
        date TEXT, log_hour INTEGER, botnet_type TEXT, raw_line_prefix TEXT, source_ip TEXT,
        received_at REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS ip_records_date ON ip_records (date);
    CREATE TABLE IF NOT EXISTS ingest_batches (
        key TEXT PRIMARY KEY, received_count INTEGER NOT NULL, received_at REAL NOT NULL);
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # NORMAL: a batch is acknowledged after its commit, which survives a kill -9 of
        # serve; a power cut may lose the last ones, and their senders send them again.
        self._conns = ThreadConnections(lambda: sqlite_connect(self.path, "normal"))
        self._conns.get().executescript(self.SCHEMA)

    def store(self, key: str | None, rows: Sequence[tuple[Any, ...]]) -> tuple[int, bool]:
        """Store a batch; returns (received_count, was_a_repeat)."""
        conn = self._conns.get()
        try:
            conn.execute("BEGIN IMMEDIATE")
            if key is not None:
                seen = conn.execute("SELECT received_count FROM ingest_batches WHERE key = ?",
                                    (key,)).fetchone()
                if seen is not None:
                    conn.execute("ROLLBACK")
                    return int(seen[0]), True
                conn.execute("INSERT INTO ingest_batches VALUES (?, ?, ?)",
                             (key, len(rows), time.time()))
            conn.executemany(f"INSERT INTO ip_records ({', '.join(COLUMNS)}) VALUES "
                             f"({', '.join('?' * len(COLUMNS))})", rows)
            conn.execute("COMMIT")
            return len(rows), False
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def stats(self) -> dict[str, Any]:
        conn = self._conns.get()
        total, distinct, last = conn.execute(
            "SELECT count(*), count(DISTINCT ip), max(received_at) FROM ip_records"
        ).fetchone()
        days = conn.execute("SELECT date, count(*), count(DISTINCT ip) FROM ip_records "
                            "GROUP BY date ORDER BY date").fetchall()
        kinds = conn.execute("SELECT botnet_type, count(*) FROM ip_records "
                             "GROUP BY botnet_type").fetchall()
        batches = conn.execute("SELECT count(*) FROM ingest_batches").fetchone()[0]
        return _stats_doc(total, distinct, last, days, kinds, batches)

    def close(self) -> None:
        self._conns.close_all()


class PgIngestStore:
    """PostgreSQL; rows go in with COPY (the 50 000 IPs/s target needs it)."""

    def __init__(self, url: str, table_prefix: str = "") -> None:
        import psycopg

        self.url = url
        self.records = f"{table_prefix}ip_records"
        self.batches = f"{table_prefix}ingest_batches"
        self._psycopg = psycopg
        self._conns = ThreadConnections(lambda: pg_connect(self.url),
                                        usable=lambda c: not (c.closed or c.broken))
        with pg_connect(self.url) as conn, conn.transaction():
            pg_create_lock(conn)  # several serve instances may start at once
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.records} (id bigserial PRIMARY KEY, "
                "ip inet NOT NULL, timestamp text, timestamp_source text, date date, "
                "log_hour smallint, botnet_type text, raw_line_prefix text, source_ip text, "
                "received_at timestamptz NOT NULL)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {self.records}_date ON {self.records} "
                         "(date)")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {self.batches} (key text PRIMARY KEY, "
                         "received_count integer NOT NULL, received_at timestamptz NOT NULL)")

    def store(self, key: str | None, rows: Sequence[tuple[Any, ...]]) -> tuple[int, bool]:
        conn = self._conns.get()
        try:
            with conn.transaction():
                if key is not None:
                    inserted = conn.execute(
                        f"INSERT INTO {self.batches} VALUES (%s, %s, now()) "
                        "ON CONFLICT (key) DO NOTHING RETURNING key", (key, len(rows))
                    ).fetchone()
                    if inserted is None:
                        count = conn.execute(f"SELECT received_count FROM {self.batches} "
                                             "WHERE key = %s", (key,)).fetchone()[0]
                        return int(count), True
                stamps: dict[float, Any] = {}  # a batch's rows share one received_at
                with conn.cursor().copy(f"COPY {self.records} ({', '.join(COLUMNS)}) "
                                        "FROM STDIN") as copy:
                    for row in rows:
                        stamp = stamps.get(row[-1])
                        if stamp is None:
                            stamp = stamps[row[-1]] = _timestamp(row[-1])
                        copy.write_row((*row[:-1], stamp))
            return len(rows), False
        except self._psycopg.Error:
            self._conns.discard()
            raise

    def stats(self) -> dict[str, Any]:
        with pg_connect(self.url) as conn:
            total, distinct, last = conn.execute(
                f"SELECT count(*), count(DISTINCT ip), extract(epoch FROM max(received_at)) "
                f"FROM {self.records}").fetchone()
            days = [(str(d), n, u) for d, n, u in conn.execute(
                f"SELECT date, count(*), count(DISTINCT ip) FROM {self.records} GROUP BY date "
                "ORDER BY date").fetchall()]
            kinds = conn.execute(f"SELECT botnet_type, count(*) FROM {self.records} "
                                 "GROUP BY botnet_type").fetchall()
            batches = conn.execute(f"SELECT count(*) FROM {self.batches}").fetchone()[0]
        return _stats_doc(total, distinct, float(last) if last else None, days, kinds, batches)

    def close(self) -> None:
        self._conns.close_all()


def _timestamp(epoch: float) -> Any:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _stats_doc(total: int, distinct: int, last: float | None, days: Sequence[Any],
               kinds: Sequence[Any], batches: int) -> dict[str, Any]:
    return {
        "total_records": int(total), "distinct_ips": int(distinct), "batches": int(batches),
        "last_received": iso_time(last),
        "per_day": [{"date": d, "records": int(n), "distinct_ips": int(u)} for d, n, u in days],
        "per_botnet_type": {str(k): int(n) for k, n in kinds},
    }


def open_store(url: str | None, state_dir: Path) -> IngestStore:
    """PostgreSQL when a URL is configured, else SQLite under the state directory."""
    if url:
        return PgIngestStore(url)
    return SqliteIngestStore(state_dir / "logs" / "ingest.db")
