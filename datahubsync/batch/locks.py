"""One job at a time per target: a file lock here, or a PostgreSQL advisory lock.

The file lock (flock, dies with its process) suits one host. With
``batch.lock: postgres`` several hosts share a target: the lock is a session
advisory lock held on a dedicated connection for the whole run, and the
connection's ``application_name`` names the task so a refused run can say
which job holds it. Either way a refused run raises LockedError (exit 75, or
409 from the API) naming the running job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datahubsync.core.errors import LockedError
from datahubsync.core.locking import Held, hold_lock

APP_PREFIX = "datahubsync-batch "


def advisory_key(target: str) -> int:
    """A stable signed 64-bit key for ``target`` (the same on every host)."""
    return int.from_bytes(hashlib.sha256(target.encode()).digest()[:8], "big", signed=True)


@contextmanager
def file_target_lock(lock_dir: Path, target: str, task_id: str, job: str) -> Iterator[None]:
    path = Path(lock_dir) / f"{target}.lock"
    try:
        lock = hold_lock(path, owner={"task_id": task_id, "job": job})
        lock.__enter__()
    except Held as exc:
        raise LockedError(_busy(target, exc.holder, str(exc))) from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _busy(target: str, owner: dict[str, object], detail: str) -> str:
    if owner.get("task_id"):
        job = f"job {owner['job']}, " if owner.get("job") else ""
        who = f"task {owner['task_id']} ({job}see `datahubsync batch status`)"
    else:
        who = "another batch task"
    return f"{who} is already running on target {target}; {detail}"


@contextmanager
def pg_target_lock(url: str, target: str, task_id: str, job: str) -> Iterator[None]:
    from datahubsync.core.db import pg_connect

    key = advisory_key(target)
    conn = pg_connect(url, autocommit=True, connect_timeout=30,
                      application_name=(APP_PREFIX + task_id)[:63])
    try:
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]
        if not got:
            row = conn.execute(
                "SELECT a.application_name, coalesce(host(a.client_addr), 'local'), a.pid "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
                "AND l.classid = %s AND l.objid = %s",
                ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)).fetchone()
            owner = {}
            if row and str(row[0]).startswith(APP_PREFIX):
                owner = {"task_id": row[0][len(APP_PREFIX):]}
            where = f"advisory lock held by backend {row[2]} from {row[1]}" if row else \
                "advisory lock held"
            raise LockedError(_busy(target, owner, where))
        yield
    finally:
        conn.close()  # ends the session, which releases the advisory lock
