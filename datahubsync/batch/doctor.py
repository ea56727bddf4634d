"""``doctor`` checks for batch jobs: can each job reach its table, is the calendar current."""

from __future__ import annotations

import datetime as dt
from typing import Any

from datahubsync.core.config import LoadedConfig
from datahubsync.core.doctor import Check
from datahubsync.core.errors import ConfigError


def batch_checks(loaded: LoadedConfig, min_free_bytes: int = 0,
                 today: dt.date | None = None) -> list[Check]:
    """One check per pg-copy job and one for the calendar; none without batch jobs."""
    cfg = loaded.config.batch
    checks: list[Check] = []
    for name, job in sorted(cfg.jobs.items()):
        if job.kind == "pg-copy":
            checks.append(_table_check(name, job))
    if cfg.calendar is not None:
        checks.append(_calendar_check(cfg.calendar, today or dt.date.today()))
    return checks


def _table_check(name: str, job: Any) -> Check:
    import psycopg
    from psycopg import sql

    from datahubsync.core.db import pg_connect
    from datahubsync.core.dburl import redact

    label = f"batch job {name}"
    schema, _, table = job.table.rpartition(".")
    ident = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    try:
        with pg_connect(job.database_url, connect_timeout=5) as conn:
            conn.execute(sql.SQL("SELECT {} FROM {} LIMIT 0").format(
                sql.Identifier(job.date_column), ident))
        return Check(label, True, f"{job.table}.{job.date_column} reachable at "
                                  f"{redact(job.database_url)}")
    except (psycopg.Error, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return Check(label, False, f"{redact(job.database_url)}: {first}"[:300],
                     "check database_url, that the table and its date column exist, and "
                     "the user's rights")


def _calendar_check(path: Any, today: dt.date) -> Check:
    from datahubsync.batch.calendar import load_calendar

    try:
        calendar = load_calendar(path)
    except ConfigError as exc:
        return Check("batch calendar", False, str(exc), "fix or remove batch.calendar")
    year = dt.date(today.year, 1, 1), dt.date(today.year, 12, 31)
    if not calendar.covers(*year):
        return Check("batch calendar", False, f"{path} lists no trading day in {today.year}",
                     "add this year's trading days to the calendar file")
    return Check("batch calendar", True, f"{path}: {len(calendar.days or ())} trading days")
