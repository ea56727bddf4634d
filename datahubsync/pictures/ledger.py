"""The task ledger: one row per task and per file, so no picture is ever lost.

The old client advanced its progress file past tasks whose downloads had failed,
and those pictures were gone for good. Here a task source only *adds* rows;
its cursor moves in the same transaction that stores the task and all its
files, and the files then live in the ledger until they are downloaded,
recorded as missing on the server, or given up after ``give_up_after``.

File states: ``pending`` → ``downloaded`` | ``missing`` (the server said "not
found" ``missing_attempts`` times) | ``failed`` (waiting for its next attempt,
with backoff) → ``given_up``. Task states: ``pending`` (files outstanding) →
``downloaded`` → ``processed`` → ``reported``, or ``failed`` (a file given up,
or processing/callback failing for ``give_up_after``). ``due_at`` says when a
task's next step is due; a step not done ``retry_after`` after it was due is
tried again. The index on ``(state, due_at)`` is the old system's composite index
(isRequired, isDealt, isReported, callTime) with the three flags folded into
one ordered state column.

SQLite (WAL, ``synchronous=FULL``: a push is acknowledged only once it is on
disk) by default, PostgreSQL by URL, through SQLAlchemy Core. One writer per
process: the worker's main thread, or the ``serve`` process taking pushes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from datahubsync.core.crashpoint import CrashPoint
from datahubsync.core.db import create_tables, sqlalchemy_engine
from datahubsync.core.dburl import redact

TASKS_ADDED = CrashPoint("pictures.tasks_added", "new tasks and the source cursor committed")
OUTCOMES_RECORDED = CrashPoint("pictures.outcomes_recorded",
                               "a batch of transfer outcomes committed to the ledger")
STEP_DONE = CrashPoint("pictures.step_done", "a task's processing or callback step committed")
FILE_STATES = ("pending", "downloaded", "missing", "failed", "given_up")
TASK_STATES = ("pending", "downloaded", "processed", "reported", "failed")

metadata = sa.MetaData()
tasks = sa.Table(
    "pic_tasks", metadata,
    sa.Column("task_id", sa.String(200), primary_key=True),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("created_time", sa.String(40)),
    sa.Column("camera_id", sa.String(200)),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("due_at", sa.Float, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("result", sa.Text),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_pic_tasks_state_due", "state", "due_at"),
)
files = sa.Table(
    "pic_files", metadata,
    sa.Column("task_id", sa.String(200), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("remote", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("not_found", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("size", sa.BigInteger),
    sa.Column("done_at", sa.Float),
    sa.Index("ix_pic_files_state_next", "state", "next_attempt_at"),
)
cursors = sa.Table(
    "pic_cursor", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("position", sa.Text, nullable=False),  # JSON: see sources.Position
    sa.Column("updated_at", sa.Float, nullable=False),
)
# Ids of pictures pushed in the existing sender's form, which carries none: assigned in
# the transaction that stores the picture, never reused (SQLite AUTOINCREMENT keeps the
# highest id ever given; a PostgreSQL sequence never goes back).
# The same picture sent again (the sender retrying a call whose answer it did not get)
# has the same fingerprint (sha256 of photoUrl, callTime, cameraCode) and keeps its id.
photo_ids = sa.Table(
    "pic_photo_ids", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
    sa.Column("received_at", sa.Float, nullable=False),
    sqlite_autoincrement=True,
)
meta = sa.Table(
    "pic_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


@dataclass(frozen=True)
class NewTask:
    """A task as a source hands it over: its id, when, and its pictures (paths or URLs)."""

    task_id: str
    images: tuple[str, ...]
    created_time: str | None = None
    camera_id: str | None = None
    source: str = "sql"


@dataclass(frozen=True)
class FileRow:
    task_id: str
    idx: int
    remote: str
    attempts: int
    not_found: int
    first_seen: float


@dataclass(frozen=True)
class Outcome:
    """What one transfer attempt came to."""

    row: FileRow
    state: str  # downloaded | not_found | error
    size: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class RetryRules:
    initial: float
    maximum: float
    give_up_after: float
    missing_attempts: int

    def delay(self, attempts: int) -> float:
        return min(self.maximum, self.initial * 2 ** max(0, attempts - 1))


def fingerprint(task: NewTask) -> str:
    """What makes a picture of the existing sender the same picture when sent again."""
    import hashlib

    text = json.dumps([list(task.images), task.created_time, task.camera_id])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ledger_url(configured: str | None, state_dir: Path) -> str:
    return configured or f"sqlite:///{state_dir / 'pictures' / 'ledger.db'}"


class Ledger:
    """The ledger's whole API; every method is one transaction."""

    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.clock = clock
        self.engine = sqlalchemy_engine(url, "full")
        try:
            create_tables(self.engine, metadata)
        except sa.exc.SQLAlchemyError as exc:
            from datahubsync.core.errors import TempFailError

            raise TempFailError(f"task ledger {redact(url)}: {exc.__class__.__name__}: "
                                f"{str(exc.orig if hasattr(exc, 'orig') else exc)[:200]}") from None

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sa.Connection]:
        with self.engine.begin() as conn:
            yield conn

    # --- adding tasks -------------------------------------------------------------------

    def add_tasks(self, new: Sequence[NewTask], cursor: tuple[str, str] | None = None) -> int:
        """Store tasks not yet known (with all their files) and move ``cursor``; one transaction.

        Returns how many tasks were new. Known task ids are ignored, so a
        lookback window or a repeated push never duplicates anything.
        """
        now = self.clock()
        with self._tx() as conn:
            ids = [t.task_id for t in new]
            known: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                known.update(r[0] for r in conn.execute(
                    sa.select(tasks.c.task_id).where(tasks.c.task_id.in_(chunk))))
            fresh = [t for t in new if t.task_id not in known]
            fresh = list({t.task_id: t for t in fresh}.values())
            if fresh:
                conn.execute(tasks.insert(), [
                    {"task_id": t.task_id, "source": t.source, "created_time": t.created_time,
                     "camera_id": t.camera_id, "received_at": now,
                     "state": "pending" if t.images else "downloaded", "due_at": now,
                     "attempts": 0, "updated_at": now} for t in fresh])
                rows = [{"task_id": t.task_id, "idx": i, "remote": path, "state": "pending",
                         "attempts": 0, "not_found": 0, "first_seen": now,
                         "next_attempt_at": now}
                        for t in fresh for i, path in enumerate(t.images)]
                if rows:
                    conn.execute(files.insert(), rows)
            if cursor is not None:
                self._set_cursor(conn, *cursor)
        TASKS_ADDED.reached()
        return len(fresh)

    def add_numbered(self, new: Sequence[NewTask]) -> list[int]:
        """Store tasks that come without an id, each given the next integer id (its
        ``task_id`` is that number); one transaction for the lot, so an id is handed out
        only with its stored task. A task stored before (same fingerprint: the sender
        retried) keeps its id and is not stored again. Returns the ids, in order."""
        for attempt in range(3):
            try:
                return self._add_numbered(new)
            except sa.exc.IntegrityError:  # PostgreSQL: another worker stored it meanwhile
                if attempt == 2:
                    raise
        raise AssertionError("not reached")

    def _add_numbered(self, new: Sequence[NewTask]) -> list[int]:
        now = self.clock()
        ids: list[int] = []
        with self._tx() as conn:
            for task in new:
                mark = fingerprint(task)
                known = conn.execute(sa.select(photo_ids.c.id)
                                     .where(photo_ids.c.fingerprint == mark)).scalar()
                if known is not None:
                    ids.append(int(known))
                    continue
                number = int(conn.execute(photo_ids.insert().values(
                    fingerprint=mark, received_at=now)).inserted_primary_key[0])
                ids.append(number)
                conn.execute(tasks.insert().values(
                    task_id=str(number), source=task.source, created_time=task.created_time,
                    camera_id=task.camera_id, received_at=now,
                    state="pending" if task.images else "downloaded", due_at=now, attempts=0,
                    updated_at=now))
                if task.images:
                    conn.execute(files.insert(), [
                        {"task_id": str(number), "idx": i, "remote": path, "state": "pending",
                         "attempts": 0, "not_found": 0, "first_seen": now,
                         "next_attempt_at": now} for i, path in enumerate(task.images)])
        TASKS_ADDED.reached()
        return ids

    def set_result(self, task_id: str, result: Any) -> str | None:
        """A task's processing result reported back by the processing script: stored, the
        task marked processed (its report step due now). Returns the task's state before,
        or None when there is no such task; a task already reported keeps its state."""
        now = self.clock()
        with self._tx() as conn:
            state = conn.execute(sa.select(tasks.c.state)
                                 .where(tasks.c.task_id == task_id)).scalar()
            if state is None:
                return None
            values: dict[str, Any] = {"result": json.dumps(result, ensure_ascii=False),
                                      "updated_at": now}
            if state != "reported":
                values.update(state="processed", due_at=now, attempts=0, last_error=None)
            conn.execute(tasks.update().where(tasks.c.task_id == task_id).values(**values))
        STEP_DONE.reached()
        return str(state)

    def _set_cursor(self, conn: sa.Connection, name: str, position: str) -> None:
        updated = conn.execute(cursors.update().where(cursors.c.name == name)
                               .values(position=position, updated_at=self.clock()))
        if updated.rowcount == 0:
            conn.execute(cursors.insert().values(name=name, position=position,
                                                 updated_at=self.clock()))

    def cursor(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(cursors.c.position)
                                .where(cursors.c.name == name)).scalar()

    def set_cursor(self, name: str, position: str) -> None:
        with self._tx() as conn:
            self._set_cursor(conn, name, position)

    # --- files --------------------------------------------------------------------------

    def due_files(self, limit: int, until: float | None = None) -> list[FileRow]:
        """Files to fetch whose next attempt is due by ``until`` (default: now)."""
        now = self.clock() if until is None else until
        query = (sa.select(files.c.task_id, files.c.idx, files.c.remote, files.c.attempts,
                           files.c.not_found, files.c.first_seen)
                 .where(files.c.state.in_(("pending", "failed")),
                        files.c.next_attempt_at <= now)
                 .order_by(files.c.next_attempt_at, files.c.task_id, files.c.idx).limit(limit))
        with self.engine.connect() as conn:
            return [FileRow(*r) for r in conn.execute(query)]

    def next_file_due(self) -> float | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.min(files.c.next_attempt_at))
                                .where(files.c.state.in_(("pending", "failed")))).scalar()

    def record(self, outcomes: Iterable[Outcome], rules: RetryRules) -> None:
        """Store transfer outcomes (one transaction for the lot).

        Successes, the bulk, go in one executemany; the tasks touched are then
        settled (only those: the cost does not grow with the ledger).
        """
        now = self.clock()
        done: list[dict[str, Any]] = []
        others: list[tuple[Outcome, dict[str, Any]]] = []
        for out in outcomes:
            row = out.row
            if out.state == "downloaded":
                done.append({"k_task": row.task_id, "k_idx": row.idx, "n_size": out.size,
                             "n_attempts": row.attempts + 1})
                continue
            if out.state == "not_found" and row.not_found + 1 >= rules.missing_attempts:
                values: dict[str, Any] = {"state": "missing", "not_found": row.not_found + 1,
                                          "done_at": now,
                                          "last_error": out.error or "not found on server"}
            else:
                given_up = now - row.first_seen >= rules.give_up_after
                values = {"state": "given_up" if given_up else "failed",
                          "last_error": (out.error or "failed")[:500],
                          "next_attempt_at": now + rules.delay(row.attempts + 1)}
                if out.state == "not_found":
                    values["not_found"] = row.not_found + 1
            others.append((out, values))
        touched = {p["k_task"] for p in done} | {o.row.task_id for o, _v in others}
        if not touched:
            return
        with self._tx() as conn:
            if done:
                conn.execute(files.update()
                             .where(files.c.task_id == sa.bindparam("k_task"),
                                    files.c.idx == sa.bindparam("k_idx"))
                             .values(state="downloaded", done_at=now, last_error=None,
                                     size=sa.bindparam("n_size"),
                                     attempts=sa.bindparam("n_attempts")), done)
            for out, values in others:
                conn.execute(files.update().where(files.c.task_id == out.row.task_id,
                                                  files.c.idx == out.row.idx)
                             .values(attempts=out.row.attempts + 1, **values))
            ids = sorted(touched)
            for start in range(0, len(ids), 500):
                self._settle(conn, now, ids[start:start + 500])
        OUTCOMES_RECORDED.reached()

    def _settle(self, conn: sa.Connection, now: float, task_ids: Sequence[str]) -> None:
        """Pending tasks (of ``task_ids``) with no file outstanding become downloaded or failed."""
        outstanding = sa.select(files.c.task_id).where(
            files.c.task_id == tasks.c.task_id,
            files.c.state.in_(("pending", "failed"))).exists()
        given_up = sa.select(files.c.task_id).where(
            files.c.task_id == tasks.c.task_id, files.c.state == "given_up").exists()
        mine = tasks.c.task_id.in_(task_ids)
        conn.execute(tasks.update().where(mine, tasks.c.state == "pending", ~outstanding,
                                          given_up)
                     .values(state="failed", last_error="a file was given up", updated_at=now))
        conn.execute(tasks.update().where(mine, tasks.c.state == "pending", ~outstanding)
                     .values(state="downloaded", due_at=now, updated_at=now))

    # --- task steps (process, callback) -------------------------------------------------

    def due_tasks(self, state: str, limit: int = 100) -> list[tuple[str, int]]:
        query = (sa.select(tasks.c.task_id, tasks.c.attempts)
                 .where(tasks.c.state == state, tasks.c.due_at <= self.clock())
                 .order_by(tasks.c.due_at).limit(limit))
        with self.engine.connect() as conn:
            return [(r[0], r[1]) for r in conn.execute(query)]

    def task_files(self, task_id: str) -> list[tuple[int, str, str]]:
        with self.engine.connect() as conn:
            return [(r[0], r[1], r[2]) for r in conn.execute(
                sa.select(files.c.idx, files.c.remote, files.c.state)
                .where(files.c.task_id == task_id).order_by(files.c.idx))]

    def task_info(self, task_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(tasks).where(tasks.c.task_id == task_id)).mappings()
            found = row.first()
            return dict(found) if found else None

    def step_done(self, task_id: str, state: str, result: Any = None,
                  from_state: str | None = None) -> None:
        """Move a task to ``state`` (only from ``from_state`` when given: a result the
        processing script reported meanwhile is not overwritten by its exit)."""
        now = self.clock()
        values: dict[str, Any] = {"state": state, "due_at": now, "updated_at": now,
                                  "attempts": 0, "last_error": None}
        if result is not None:
            values["result"] = json.dumps(result, ensure_ascii=False)
        where = [tasks.c.task_id == task_id]
        if from_state is not None:
            where.append(tasks.c.state == from_state)
        with self._tx() as conn:
            conn.execute(tasks.update().where(*where).values(**values))
        STEP_DONE.reached()

    def step_failed(self, task_id: str, error: str, retry_after: float,
                    give_up_after: float) -> None:
        now = self.clock()
        with self._tx() as conn:
            row = conn.execute(sa.select(tasks.c.received_at, tasks.c.attempts)
                               .where(tasks.c.task_id == task_id)).first()
            if row is None:
                return
            values: dict[str, Any] = {"attempts": row[1] + 1, "last_error": error[:500],
                                      "due_at": now + retry_after, "updated_at": now}
            if now - row[0] >= give_up_after:
                values["state"] = "failed"
            conn.execute(tasks.update().where(tasks.c.task_id == task_id).values(**values))

    # --- status, retry, forget ----------------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        with self.engine.connect() as conn:
            by_file = dict(conn.execute(sa.select(files.c.state, sa.func.count())
                                        .group_by(files.c.state)).all())
            by_task = dict(conn.execute(sa.select(tasks.c.state, sa.func.count())
                                        .group_by(tasks.c.state)).all())
        return {"files": {s: int(by_file.get(s, 0)) for s in FILE_STATES},
                "tasks": {s: int(by_task.get(s, 0)) for s in TASK_STATES}}

    def problems(self, limit: int = 50) -> list[dict[str, Any]]:
        """Files that are failing, missing or given up, oldest first."""
        query = (sa.select(files.c.task_id, files.c.idx, files.c.remote, files.c.state,
                           files.c.attempts, files.c.last_error, files.c.next_attempt_at)
                 .where(files.c.state.in_(("failed", "missing", "given_up")))
                 .order_by(files.c.first_seen, files.c.task_id, files.c.idx).limit(limit))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def failed_tasks(self, limit: int = 50) -> list[dict[str, Any]]:
        query = (sa.select(tasks.c.task_id, tasks.c.state, tasks.c.attempts,
                           tasks.c.last_error, tasks.c.due_at)
                 .where(sa.or_(tasks.c.state == "failed",
                               sa.and_(tasks.c.attempts > 0,
                                       tasks.c.state.in_(("downloaded", "processed")))))
                 .order_by(tasks.c.received_at).limit(limit))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def retry(self, task_ids: Sequence[str] | None, include_final: bool) -> int:
        """Make waiting failures due now; ``include_final`` also reopens missing/given-up ones.

        Reopened files and tasks start their ``give_up_after`` clock again.
        Returns how many files and task steps were made due.
        """
        now = self.clock()
        only_files = [files.c.task_id.in_(task_ids)] if task_ids else []
        only_tasks = [tasks.c.task_id.in_(task_ids)] if task_ids else []
        with self._tx() as conn:
            changed = conn.execute(files.update().where(files.c.state == "failed", *only_files)
                                   .values(next_attempt_at=now)).rowcount
            if include_final:
                changed += conn.execute(
                    files.update().where(files.c.state.in_(("missing", "given_up")),
                                         *only_files)
                    .values(state="pending", next_attempt_at=now, first_seen=now, attempts=0,
                            not_found=0, done_at=None)).rowcount
                outstanding = sa.select(files.c.task_id).where(
                    files.c.task_id == tasks.c.task_id,
                    files.c.state.in_(("pending", "failed"))).exists()
                conn.execute(tasks.update().where(
                    tasks.c.state.in_(("failed", "downloaded")), outstanding, *only_tasks)
                    .values(state="pending", received_at=now, updated_at=now))
                conn.execute(tasks.update().where(tasks.c.state == "failed", *only_tasks)
                             .values(state="downloaded", received_at=now, due_at=now,
                                     attempts=0, updated_at=now))
            changed += conn.execute(tasks.update().where(
                tasks.c.state.in_(("downloaded", "processed")), tasks.c.due_at > now,
                *only_tasks).values(due_at=now)).rowcount
        return changed

    def forget(self, task_id: str) -> bool:
        with self._tx() as conn:
            conn.execute(files.delete().where(files.c.task_id == task_id))
            return conn.execute(tasks.delete().where(tasks.c.task_id == task_id)).rowcount > 0

    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar()

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as conn:
            if conn.execute(meta.update().where(meta.c.key == key)
                            .values(value=value)).rowcount == 0:
                conn.execute(meta.insert().values(key=key, value=value))
