"""Where the hub keeps the reports of its fleet: SQLite by default, PostgreSQL by URL.

One row per report (host, command, when it ended, outcome, the document as
JSON), kept ``fleet.retention_days`` (30). Several ``serve`` instances may share
one PostgreSQL store: a report is one insert, so it lands once wherever it
arrives. The alert state (what was announced, when) lives beside it, so an
alert is sent by the one instance that flips it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from datahubsync.core.db import create_tables, sqlalchemy_engine

metadata = sa.MetaData()
reports = sa.Table(
    "fleet_reports", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("command", sa.String(64), nullable=False),
    sa.Column("ended_at", sa.Float, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("exit_code", sa.Integer, nullable=False),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Index("ix_fleet_reports_host_command", "host", "command", "id"),
    sa.Index("ix_fleet_reports_received", "received_at"),
    sqlite_autoincrement=True,
)
alerts = sa.Table(
    "fleet_alerts", metadata,
    sa.Column("key", sa.String(300), primary_key=True),  # rule|host
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("since", sa.Float, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("announced", sa.Boolean, nullable=False),  # the start message went out
    sa.Column("last_sent", sa.Float),
)


class ReportStore:
    """The reports of every host, and the alerts' state."""

    def __init__(self, url: str, retention_days: int = 30,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = sqlalchemy_engine(url, "normal")
        self.retention = retention_days * 86400
        self.clock = clock
        self._inserts = 0
        create_tables(self.engine, metadata)

    def close(self) -> None:
        self.engine.dispose()

    def add(self, doc: Mapping[str, Any], ended_at: float) -> None:
        """Store one report; now and then, drop those past the retention."""
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(reports.insert().values(
                host=str(doc["host"])[:200], command=str(doc["command"])[:64],
                ended_at=ended_at, outcome=str(doc.get("outcome", ""))[:16],
                exit_code=int(doc.get("exit_code", 0)),
                doc=json.dumps(doc, ensure_ascii=False), received_at=now))
            self._inserts += 1
            if self._inserts % 500 == 1:
                conn.execute(reports.delete().where(reports.c.received_at < now - self.retention))

    def latest(self) -> list[dict[str, Any]]:
        """The newest report of each (host, command)."""
        newest = (sa.select(sa.func.max(reports.c.id))
                  .group_by(reports.c.host, reports.c.command)).scalar_subquery()
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(reports.c.doc, reports.c.received_at)
                                .where(reports.c.id.in_(newest)))
            return [dict(json.loads(doc), received_at=received) for doc, received in rows]

    def history(self, host: str, since: float, limit: int = 500) -> list[dict[str, Any]]:
        """A host's reports since ``since``, oldest first (at most ``limit``, the newest)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(reports.c.doc).where(
                reports.c.host == host, reports.c.ended_at >= since)
                .order_by(reports.c.id.desc()).limit(limit)).all()
        return [json.loads(r[0]) for r in reversed(rows)]

    def hosts(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.select(reports.c.host).distinct())]

    # -- alerts ----------------------------------------------------------------------
    def alert_states(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            return {r.key: dict(r._mapping) for r in conn.execute(sa.select(alerts))}

    def flip(self, key: str, active: bool, summary: str, now: float,
             min_interval: float) -> str | None:
        """Record the condition ``key`` as ``active`` or not; returns what to announce:
        "firing", "resolved" or None (nothing new, or too soon after the last message).
        One transaction: of several instances, one announces."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(alerts).where(alerts.c.key == key)).first()
            if row is None:
                if not active:
                    return None
                conn.execute(alerts.insert().values(key=key, active=True, since=now,
                                                    summary=summary, announced=True,
                                                    last_sent=now))
                return "firing"
            if active and not row.active:
                if row.last_sent is not None and now - row.last_sent < min_interval:
                    conn.execute(alerts.update().where(alerts.c.key == key).values(
                        active=True, since=now, summary=summary, announced=False))
                    return None  # flapping: quiet until min_interval has passed
                conn.execute(alerts.update().where(alerts.c.key == key).values(
                    active=True, since=now, summary=summary, announced=True, last_sent=now))
                return "firing"
            if active and row.active and not row.announced and (
                    row.last_sent is None or now - row.last_sent >= min_interval):
                conn.execute(alerts.update().where(alerts.c.key == key).values(
                    announced=True, last_sent=now, summary=summary))
                return "firing"
            if not active and row.active:
                conn.execute(alerts.update().where(alerts.c.key == key).values(
                    active=False, summary=summary, last_sent=now if row.announced
                    else row.last_sent))
                return "resolved" if row.announced else None
            return None

    def active_keys(self) -> Iterable[str]:
        return [k for k, v in self.alert_states().items() if v["active"]]
