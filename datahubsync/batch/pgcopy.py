"""``kind: pg-copy``: one day's CSV rows into a PostgreSQL table with COPY.

Each day is one transaction on a fresh connection (the old script learned that a
reused connection dies between days): delete that day's rows, COPY the new
ones, check that every row carries that day's date, commit. Re-running a day
therefore never duplicates rows, and a failed or killed day leaves the table
as it was. A malformed row fails its day with PostgreSQL's own line number.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import glob
import io
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from datahubsync.batch.progress import DayOutcome
from datahubsync.batch.units import Cancelled, render, render_argv, stop_child
from datahubsync.core.crashpoint import CrashPoint
from datahubsync.core.db import ThreadConnections, pg_connect
from datahubsync.core.dburl import libpq_url as conninfo

log = logging.getLogger(__name__)
CHUNK = 1 << 20
DAY_LOADED = CrashPoint("batch.day_loaded", "a day's rows copied, transaction not committed")
DAY_COMMITTED = CrashPoint("batch.day_committed", "a day's transaction committed, "
                           "progress not yet saved")


def target_name(url: str, table: str) -> str:
    """The lock name of a table: the same table on the same server is one target."""
    try:
        parts = urlsplit(conninfo(url))
        where = f"{parts.hostname or 'local'}-{parts.port or 5432}{parts.path.replace('/', '-')}"
    except ValueError:
        where = "db"
    return f"pg-{where}-{table}"


class DayFailed(Exception):
    """This day cannot be loaded (bad row, no file, wrong date); the others go on."""


@dataclass
class Source:
    """One input of a day: a label for messages and its bytes, in chunks."""

    label: str
    chunks: Iterator[bytes]


def _file_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


def _command_chunks(argv: list[str], timeout: float, stop: threading.Event) -> Iterator[bytes]:
    deadline = time.monotonic() + timeout
    try:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise DayFailed(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    assert child.stdout is not None and child.stderr is not None
    try:
        while chunk := child.stdout.read1(CHUNK):
            if stop.is_set():
                raise Cancelled
            if time.monotonic() > deadline:
                raise DayFailed(f"{argv[0]}: timed out after {timeout:g}s")
            yield chunk
        err = child.stderr.read(65536).decode("utf-8", "replace").strip()
        code = child.wait(max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise DayFailed(f"{argv[0]}: timed out after {timeout:g}s") from None
    finally:
        if child.poll() is None:
            stop_child(child)
        child.stdout.close()
        child.stderr.close()
    if code != 0:
        last = err.splitlines()[-1] if err else ""
        raise DayFailed(f"{argv[0]}: exit {code}{': ' + last if last else ''}")


def _python_codec(pg_encoding: str) -> str:
    name = pg_encoding.replace("_", "").lower()
    try:
        return codecs.lookup({"utf8": "utf-8", "sqlascii": "ascii"}.get(name, name)).name
    except LookupError:
        return "utf-8"


class PgCopyUnit:
    """Loads one day; see the module docstring.

    Each worker thread keeps its connection from one day to the next (a new
    backend per day cost 12–25 ms a day, a quarter of a 50 000-row day), but a
    connection that saw any error is closed and the next day opens a fresh one:
    the old client's "connection already closed" came from reusing a dead one.
    """

    def __init__(self, name: str, cfg: Any) -> None:
        self.name, self.cfg = name, cfg
        self._conns = ThreadConnections(
            lambda: pg_connect(cfg.database_url, autocommit=False, connect_timeout=30,
                               application_name=f"datahubsync-batch {name}"[:63]),
            usable=lambda c: not (c.closed or c.broken))

    def _connection(self) -> Any:
        return self._conns.get()

    def _discard(self) -> None:
        self._conns.discard()

    def close(self) -> None:
        """Close every worker's connection (the runner calls this at the end)."""
        self._conns.close_all()

    # -- inputs -------------------------------------------------------------
    def sources(self, day: dt.date, stop: threading.Event) -> list[Source]:
        source = self.cfg.source
        if source.glob is not None:
            pattern = render(source.glob, day)
            paths = sorted(glob.glob(pattern))
            if not paths:
                raise FileNotFoundError(f"no file matches {pattern}")
            return [Source(p, _file_chunks(p)) for p in paths]
        argv = render_argv(source.command, day)
        return [Source(argv[0], _command_chunks(argv, self.cfg.timeout, stop))]

    def plan(self, day: dt.date) -> str:
        """What ``--dry-run`` says about a day."""
        source = self.cfg.source
        if source.glob is not None:
            pattern = render(source.glob, day)
            count = len(glob.glob(pattern))
            return f"{count} file(s) match {pattern}"
        return "run " + " ".join(render_argv(source.command, day))

    # -- one day --------------------------------------------------------------
    def run(self, day: dt.date, stop: threading.Event) -> DayOutcome:
        import psycopg

        try:
            sources = self.sources(day, stop)
        except FileNotFoundError as exc:
            status = "skipped" if self.cfg.source.missing == "skip" else "failed"
            return DayOutcome(status, str(exc))
        try:
            rows = self._load(self._connection(), day, sources, stop)
        except Cancelled:
            self._discard()  # closing the connection rolls the day back
            return DayOutcome("cancelled", "rolled back")
        except DayFailed as exc:
            self._discard()
            return DayOutcome("failed", str(exc))
        except psycopg.Error as exc:
            self._discard()
            return DayOutcome("failed", self._describe(exc))
        except BaseException:
            self._discard()
            raise
        return DayOutcome("success", f"{rows} rows", rows)

    def _load(self, conn: Any, day: dt.date, sources: list[Source],
              stop: threading.Event) -> int:
        from psycopg import sql

        cfg = self.cfg
        schema, _, table = cfg.table.rpartition(".")
        ident = sql.Identifier(schema, table) if schema else sql.Identifier(table)
        date_col = sql.Identifier(cfg.date_column)
        total = 0
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(
                sql.Literal(int(cfg.timeout * 1000))))
            cur.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(ident, date_col), (day,))
            replaced = cur.rowcount
            for source in sources:
                total += self._copy_one(cur, ident, source, stop)
            if cfg.verify_dates:
                cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(
                    ident, date_col), (day,))
                dated = cur.fetchone()[0]
                if dated != total:
                    raise DayFailed(f"{total - dated} of {total} rows are not dated {day} "
                                    f"(column {cfg.date_column}); day rolled back")
        DAY_LOADED.reached()
        conn.commit()
        DAY_COMMITTED.reached()
        log.debug("%s %s: replaced %d rows with %d", self.name, day, replaced, total)
        return total

    def _copy_one(self, cur: Any, ident: Any, source: Source, stop: threading.Event) -> int:
        from psycopg import sql

        cfg = self.cfg
        first = next(source.chunks, b"")
        columns = cfg.columns or (self._header(first, source.label) if cfg.header else None)
        options = sql.SQL("FORMAT csv, HEADER {}, DELIMITER {}, ENCODING {}").format(
            sql.SQL("true" if cfg.header else "false"), sql.Literal(cfg.delimiter),
            sql.Literal(cfg.encoding))
        target = ident
        if columns:
            target = sql.SQL("{} ({})").format(
                ident, sql.SQL(", ").join(sql.Identifier(c) for c in columns))
        statement = sql.SQL("COPY {} FROM STDIN WITH ({})").format(target, options)
        try:
            with cur.copy(statement) as copy:
                if first:
                    copy.write(first)
                for chunk in source.chunks:
                    if stop.is_set():
                        raise Cancelled
                    copy.write(chunk)
        except Exception as exc:
            if hasattr(exc, "diag"):
                exc.source_label = source.label  # type: ignore[attr-defined]
            raise
        return cur.rowcount

    def _header(self, first: bytes, label: str) -> list[str]:
        line = first.split(b"\n", 1)[0].rstrip(b"\r")
        if not line:
            raise DayFailed(f"{label}: empty input, expected a CSV header line")
        text = line.decode(_python_codec(self.cfg.encoding), "replace").lstrip("\ufeff")
        names = next(csv.reader(io.StringIO(text), delimiter=self.cfg.delimiter))
        return [n.strip() for n in names]

    @staticmethod
    def _describe(exc: Any) -> str:
        """PostgreSQL's message plus its context, which carries the line number."""
        diag = getattr(exc, "diag", None)
        primary = (diag.message_primary if diag else None) or str(exc).strip()
        context = diag.context.strip() if diag and diag.context else ""
        label = getattr(exc, "source_label", "")
        text = f"{label}: {primary}" if label else primary
        return f"{text} ({context.splitlines()[0]})" if context else text
