r"""What the pictures client tests share: a picture tree, task tables, a serve, a config.

Pictures live in the seed's shape (``D:\pic\2025\10\01\CAM03\<task>_TARE1.jpg``,
8 per task); the task table holds those Windows paths, as production does.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.helpers import Hub, write_yaml

PREFIX = "D:\\pic"
TOKEN = "pictures-client-token-42"
KINDS = [f"{kind}{i}" for kind in ("TARE", "GROSS") for i in range(1, 5)]
COLUMNS = [f"{kind}_IMAGE_PATH{i}" for kind in ("TARE", "GROSS") for i in range(1, 5)]
T0 = dt.datetime(2025, 10, 1, 8, 0, 0, 123456)


@dataclass
class TaskRow:
    task_id: int
    created: dt.datetime
    paths: list[str | None]


@dataclass
class PictureSet:
    """Tasks, the server root, and the bytes of every picture that exists on the server."""

    root: Path
    tasks: list[TaskRow]
    content: dict[str, bytes]  # client path -> bytes (present on the server)
    missing: set[str]

    def local(self, local_root: Path, path: str) -> Path:
        return local_root.joinpath(*path.split("\\")[1:])


def make_pictures(root: Path, n_tasks: int, *, first_id: int = 1, missing: int = 0,
                  start: dt.datetime = T0, step: dt.timedelta = dt.timedelta(seconds=1),
                  seed: int = 0, size: tuple[int, int] = (2000, 30000)) -> PictureSet:
    """``n_tasks`` tasks of 8 pictures; the last ``missing`` paths are not on the server."""
    rng = random.Random(seed)
    tasks: list[TaskRow] = []
    content: dict[str, bytes] = {}
    all_paths: list[str] = []
    for n in range(n_tasks):
        task_id = first_id + n
        created = start + n * step
        day = created.strftime("%Y\\%m\\%d")
        paths = [f"{PREFIX}\\{day}\\CAM{task_id % 4:02d}\\{task_id}_{kind}.jpg" for kind in KINDS]
        tasks.append(TaskRow(task_id, created, list(paths)))
        all_paths += paths
    gone = set(all_paths[len(all_paths) - missing:]) if missing else set()
    for path in all_paths:
        if path in gone:
            continue
        data = rng.randbytes(rng.randint(*size))
        target = root.joinpath(*path.split("\\")[2:])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        content[path] = data
    return PictureSet(root, tasks, content, gone)


def create_task_table(url: str, table: str) -> None:
    engine = sa.create_engine(url)
    kind = engine.dialect.name
    created = {"postgresql": "TIMESTAMP(6)", "mysql": "DATETIME(6)"}.get(kind, "TEXT")
    ident = {"postgresql": "BIGINT", "mysql": "BIGINT"}.get(kind, "INTEGER")
    cols = ", ".join(f"{c} VARCHAR(400)" for c in COLUMNS)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (TASK_ID {ident} NOT NULL, "
                             f"CREATED_TIME {created} NOT NULL, {cols})"))
    engine.dispose()


def insert_tasks(url: str, table: str, rows: list[TaskRow]) -> None:
    engine = sa.create_engine(url)
    as_text = engine.dialect.name == "sqlite"
    names = ", ".join(["TASK_ID", "CREATED_TIME", *COLUMNS])
    marks = ", ".join([":id", ":created", *(f":p{i}" for i in range(8))])
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO {table} ({names}) VALUES ({marks})"), [
            {"id": r.task_id,
             "created": r.created.isoformat(" ") if as_text else r.created,
             **{f"p{i}": p for i, p in enumerate(r.paths)}} for r in rows])
    engine.dispose()


def start_server(tmp: Path, root: Path, **serve: Any) -> Hub:
    data = tmp / "hubdata"
    data.mkdir(exist_ok=True)
    settings: dict[str, Any] = {"api_tokens": [TOKEN],
                                "picture_roots": [{"prefix": PREFIX, "path": str(root)}]}
    settings.update(serve)
    return Hub(tmp, data, **settings).start()


def pictures_config(tmp: Path, server_url: str | None, database_url: str | None, table: str,
                    name: str = "client.yaml", **pictures: Any) -> Path:
    section: dict[str, Any] = {
        "source": "sql", "database_url": database_url, "table": table,
        "server_url": server_url, "token": TOKEN, "workers": 4,
        "local_root": str(tmp / "mirror"), "retry_initial": 0.05, "retry_max": 0.2,
        "missing_attempts": 1, "poll_interval": 0.2, "timeout": 5}
    section.update(pictures)
    return write_yaml(tmp / name, {"state_dir": str(tmp / "picstate"), "pictures": section})


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_mirror(pics: PictureSet, local_root: Path) -> list[str]:
    """Problems: pictures absent or different in the mirror, or present though missing."""
    problems = []
    for path, data in pics.content.items():
        local = pics.local(local_root, path)
        if not local.exists():
            problems.append(f"absent: {path}")
        elif digest(local.read_bytes()) != digest(data):
            problems.append(f"differs: {path}")
    for path in pics.missing:
        if pics.local(local_root, path).exists():
            problems.append(f"present though missing on the server: {path}")
    leftovers = [p for p in local_root.rglob(".*.part")] if local_root.exists() else []
    problems += [f"temp file left: {p}" for p in leftovers]
    return problems


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def task_table(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(SQLAlchemy URL, table name) of a not yet created task table on each database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tasks.db'}", "PIC_MATCHTASK"
    if request.param == "postgresql":
        pg_url = request.getfixturevalue("pg_url")
        table = request.getfixturevalue("pg_table")
        return "postgresql+psycopg://" + pg_url.split("://", 1)[1], table
    return request.getfixturevalue("mysql_url"), request.getfixturevalue("mysql_table")


def sqlite_tasks(tmp: Path, rows: list[TaskRow]) -> tuple[str, str]:
    url = f"sqlite:///{tmp / 'tasks.db'}"
    create_task_table(url, "PIC_MATCHTASK")
    insert_tasks(url, "PIC_MATCHTASK", rows)
    return url, "PIC_MATCHTASK"
