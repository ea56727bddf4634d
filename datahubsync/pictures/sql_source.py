"""Task source ``sql``: keyset paging over the task table, any SQLAlchemy URL.

The old client compared ``TASK_ID`` as a string (so ``9`` sorted after ``10``) and
cut timestamps to seconds; here the position is ``(created_time, task_id)``
kept in the types the database returned (a datetime with its microseconds,
an integer id compared as an integer) and stored as JSON in the ledger.

Table and column names are emitted *unquoted*, as written in the config, so
the database folds their case as it would in hand-written SQL: the old client's
``jlyxz.PIC_MATCHTASK`` / ``CREATED_TIME`` work on Oracle (upper case), on
PostgreSQL (lower case) and on MariaDB alike.

Oracle: ``oracle+oracledb://`` in thin mode (no Instant Client, PATH never
touched); thick mode only with ``pictures.oracle.lib_dir``, initialised once
per process. ``oracle_compat: 11g`` pages with ROWNUM instead of ``FETCH
FIRST`` (Oracle 11g has no ``FETCH FIRST``; thin mode needs 12.1 or later, so
11g also needs ``lib_dir``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import quoted_name

from datahubsync.core.dburl import redact
from datahubsync.core.errors import ConfigError, TempFailError
from datahubsync.pictures.ledger import NewTask

log = logging.getLogger(__name__)
CURSOR_NAME = "sql"


@dataclass(frozen=True)
class Position:
    """Where the keyset stands: the last task taken, in the database's own types."""

    created: Any
    task_id: Any

    def dump(self) -> str:
        return json.dumps({"created": _encode(self.created), "task_id": _encode(self.task_id)})

    @classmethod
    def load(cls, text: str) -> Position:
        doc = json.loads(text)
        return cls(_decode(doc["created"]), _decode(doc["task_id"]))


def _encode(value: Any) -> dict[str, str]:
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, bool):
        raise TypeError("a boolean cannot be a keyset value")
    if isinstance(value, int):
        return {"int": str(value)}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, float):
        return {"float": repr(value)}
    return {"str": str(value)}


def _decode(doc: dict[str, str]) -> Any:
    (kind, text), = doc.items()
    return {"datetime": dt.datetime.fromisoformat, "date": dt.date.fromisoformat, "int": int,
            "decimal": decimal.Decimal, "float": float, "str": str}[kind](text)


def task_key(value: Any) -> str:
    """The ledger's text key for a task id (``Decimal('10')`` and ``10`` are the same task)."""
    if isinstance(value, decimal.Decimal) and value == value.to_integral_value():
        return str(int(value))
    return str(value)


def legacy_position(path: Path) -> Position | None:
    """The old client's ``sync_progress.json`` → a position, or None when absent.

    Format (as the old client writes it): ``{"last_created_time": "YYYY-MM-DD HH:MM:SS",
    "last_task_id", "last_download_time"}``. A numeric-looking id is taken as
    an integer, since the column is numeric in production.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the legacy progress file: {exc}") from None
    try:
        created = dt.datetime.strptime(str(doc["last_created_time"])[:26].strip(),
                                       "%Y-%m-%d %H:%M:%S.%f" if "." in
                                       str(doc["last_created_time"]) else "%Y-%m-%d %H:%M:%S")
        raw_id = doc["last_task_id"]
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a sync_progress.json of the old client: {exc}") from None
    task_id: Any = int(raw_id) if str(raw_id).strip().lstrip("-").isdigit() else str(raw_id)
    return Position(created, task_id)


@functools.cache
def _init_thick_mode(lib_dir: str) -> None:
    """python-oracledb thick mode, once per process (never by editing PATH)."""
    import oracledb

    oracledb.init_oracle_client(lib_dir=lib_dir)


def make_engine(url: str, compat: str | None, lib_dir: Path | None) -> sa.Engine:
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("oracle"):
        if lib_dir is not None:
            _init_thick_mode(str(lib_dir))
        elif compat == "11g":
            raise ConfigError("pictures.oracle_compat: 11g needs thick mode: python-oracledb's "
                              "thin mode talks to Oracle 12.1 and later only; set "
                              "pictures.oracle.lib_dir to the Instant Client directory")
        if compat == "11g":
            kwargs["enable_offset_fetch"] = False
    elif url.startswith("sqlite"):
        kwargs = {"poolclass": sa.pool.NullPool}
    try:
        return sa.create_engine(url, **kwargs)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"pictures.database_url {redact(url)}: {exc}") from None


def _name(text: str) -> quoted_name:
    return quoted_name(text, quote=False)


class SqlSource:
    """Reads new task rows page by page, and re-reads the lookback window."""

    def __init__(self, engine: sa.Engine, table: str, created: str, task_id: str,
                 images: list[str], batch_size: int, lookback: dt.timedelta) -> None:
        schema, _, name = table.rpartition(".")
        self.created = sa.column(_name(created))
        self.task_id = sa.column(_name(task_id))
        self.images = [sa.column(_name(c)) for c in images]
        self.table = sa.table(_name(name), self.created, self.task_id, *self.images,
                              schema=_name(schema) if schema else None)
        self.engine = engine
        self.batch_size = batch_size
        self.lookback = lookback

    def page_query(self, after: Position | None, until: Position | None = None) -> sa.Select:
        """Rows after ``after`` (and up to ``until``), in keyset order, one page."""
        query = sa.select(self.created, self.task_id, *self.images).select_from(self.table)
        if after is not None and after.task_id is None:  # the start of a lookback window
            query = query.where(self.created >= sa.bindparam("after_created", after.created))
        elif after is not None:
            query = query.where(sa.or_(
                self.created > sa.bindparam("after_created", after.created),
                sa.and_(self.created == sa.bindparam("after_created2", after.created),
                        self.task_id > sa.bindparam("after_id", after.task_id))))
        if until is not None:
            query = query.where(sa.or_(
                self.created < sa.bindparam("until_created", until.created),
                sa.and_(self.created == sa.bindparam("until_created2", until.created),
                        self.task_id <= sa.bindparam("until_id", until.task_id))))
        return query.order_by(self.created, self.task_id).limit(self.batch_size)

    def fetch(self, after: Position | None, until: Position | None = None
              ) -> tuple[list[NewTask], Position | None]:
        """One page: the tasks and the position of its last row (None when empty)."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(self.page_query(after, until)).all()
        except sa.exc.SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", exc)).splitlines()[0][:300]
            raise TempFailError(f"task table {redact(str(self.engine.url))}: "
                                f"{type(exc).__name__}: {detail}") from None
        new = [NewTask(task_key(r[1]), tuple(str(p) for p in r[2:] if p not in (None, "")),
                       _text_time(r[0]), None, "sql") for r in rows]
        last = Position(rows[-1][0], rows[-1][1]) if rows else None
        return new, last

    def lookback_start(self, position: Position) -> Position | None:
        """The position ``lookback`` before ``position`` (None: cannot compute, skip)."""
        created = position.created
        if isinstance(created, str):
            try:
                parsed = dt.datetime.fromisoformat(created)
            except ValueError:
                return None
            sep = "T" if "T" in created else " "
            start = (parsed - self.lookback).isoformat(sep)
            return Position(start, None)
        if isinstance(created, (dt.datetime, dt.date)):
            return Position(created - self.lookback, None)
        return None


def _text_time(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat(" ") if isinstance(value, dt.datetime) else str(value)
