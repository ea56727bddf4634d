"""Database plumbing shared by every store: URL checks and "the store is down".

A store that cannot be reached is not the client's fault: ``serve`` answers
503 (with Retry-After) instead of 500, and a client retries later.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any, Literal

Durability = Literal["full", "normal"]

STORE_SCHEMES = ("sqlite", "postgresql", "postgres")


def check_store_url(value: str | None, schemes: tuple[str, ...] = STORE_SCHEMES) -> str | None:
    """A config validator: ``value`` must be a URL of one of ``schemes`` (``+driver`` allowed)."""
    if value is None:
        return None
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.split("+", 1)[0].lower() not in schemes or not rest:
        raise ValueError(f"expected a URL such as postgresql://user@host/db or "
                         f"sqlite:////path/file.db (schemes: {', '.join(schemes)})")
    return value


def unavailable(exc: BaseException) -> bool:
    """Is ``exc`` a store that is down, locked or unreachable (retry later), not a bug?"""
    if isinstance(exc, sqlite3.OperationalError):
        return True
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, (psycopg.OperationalError,
                                                psycopg.InterfaceError)):
        return True
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError,
                                               sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return True
    return False


def sqlite_pragmas(conn: sqlite3.Connection, durability: Durability) -> None:
    """The house settings of every SQLite file we keep.

    WAL (readers never block the writer), a 30 s busy timeout (the forked
    workers of ``serve`` and a CLI share files), and ``synchronous``:
    ``full`` for what must survive a power cut once acknowledged (the task
    ledger: a pushed picture was answered ``success``), ``normal`` where a
    lost last commit is redone (the logs queue re-reads lines from its offset).
    """
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={durability.upper()}")
    conn.execute("PRAGMA busy_timeout=30000")


def sqlite_connect(path: Path, durability: Durability) -> sqlite3.Connection:
    """A raw sqlite3 connection in autocommit mode (callers say BEGIN IMMEDIATE)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    sqlite_pragmas(conn, durability)
    return conn


def sqlalchemy_engine(url: str, durability: Durability = "full") -> Any:
    """A SQLAlchemy engine for ``url``: SQLite with the house settings and transactions
    that take the write lock when they begin (BEGIN IMMEDIATE: a read-then-write
    transaction in another process can never fail half way with "database is
    locked"), PostgreSQL through psycopg 3 with a small pre-pinged pool."""
    import sqlalchemy as sa

    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool,
                                  connect_args={"timeout": 30, "isolation_level": None})

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            sqlite_pragmas(dbapi_conn, durability)

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2)


def pg_connect(url: str, **options: Any) -> Any:
    """A psycopg 3 connection from a PostgreSQL URL (``postgresql+psycopg://`` accepted),
    with a connect timeout unless one is given."""
    import psycopg

    from datahubsync.core.dburl import libpq_url

    options.setdefault("connect_timeout", 10)
    return psycopg.connect(libpq_url(url), **options)


class ThreadConnections:
    """One connection per thread that asks (sqlite3 and psycopg connections are not for
    sharing across threads), all closed by :meth:`close_all`. ``serve`` runs store calls
    in its executor threads, so the number stays that of the executor."""

    def __init__(self, factory: Any, usable: Any = lambda conn: True) -> None:
        import threading

        self._factory = factory
        self._usable = usable
        self._lock = threading.Lock()
        self._by_thread: dict[int, Any] = {}

    def get(self) -> Any:
        import threading

        key = threading.get_ident()
        with self._lock:
            conn = self._by_thread.get(key)
        if conn is None or not self._usable(conn):
            if conn is not None:
                with contextlib_suppress():
                    conn.close()
            conn = self._factory()
            with self._lock:
                self._by_thread[key] = conn
        return conn

    def discard(self) -> None:
        """Drop this thread's connection (after an error left it unusable)."""
        import threading

        with self._lock:
            conn = self._by_thread.pop(threading.get_ident(), None)
        if conn is not None:
            with contextlib_suppress():
                conn.close()

    def close_all(self) -> None:
        with self._lock:
            conns, self._by_thread = list(self._by_thread.values()), {}
        for conn in conns:
            with contextlib_suppress():
                conn.close()


def contextlib_suppress() -> Any:
    import contextlib

    return contextlib.suppress(Exception)


def create_tables(engine: Any, metadata: Any) -> None:
    """``CREATE TABLE IF NOT EXISTS`` for ``metadata``, safe when several processes or hosts
    start at once: on PostgreSQL concurrent creations of one table collide in its catalog
    (a duplicate ``pg_type`` row), so they take turns under a transaction advisory lock."""
    import sqlalchemy as sa

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(7364521098)"))
        metadata.create_all(conn, checkfirst=True)


def pg_create_lock(conn: Any) -> None:
    """The same turn-taking for raw psycopg DDL (inside the caller's transaction)."""
    conn.execute("SELECT pg_advisory_xact_lock(7364521098)")
