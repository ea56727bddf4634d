"""The sql task source on real SQLite, PostgreSQL and MariaDB tables; Oracle SQL compiled.

Each test fails when its feature breaks: typed keyset (``9`` before ``10``),
microseconds kept, the cursor moving with the ledger rows, the lookback
window, the seed's ``sync_progress.json``, ROWNUM paging for 11g.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import oracle

from datahubsync.core.errors import ConfigError
from datahubsync.pictures.ledger import Ledger
from datahubsync.pictures.sql_source import (
    Position,
    SqlSource,
    legacy_position,
    make_engine,
)
from tests.pictures_client_kit import COLUMNS, T0, TaskRow, create_task_table, insert_tasks


def _rows(ids: list[int], created: list[dt.datetime]) -> list[TaskRow]:
    return [TaskRow(i, c, [f"D:\\pic\\{i}_{k}.jpg" for k in range(8)])
            for i, c in zip(ids, created, strict=True)]


def _source(url: str, table: str, batch: int = 3, lookback_min: float = 10) -> SqlSource:
    return SqlSource(make_engine(url, None, None), table, "CREATED_TIME", "TASK_ID",
                     COLUMNS, batch, dt.timedelta(minutes=lookback_min))


def _walk(source: SqlSource, start: Position | None) -> list[str]:
    seen: list[str] = []
    position = start
    while True:
        new, last = source.fetch(position)
        if last is None:
            return seen
        seen += [t.task_id for t in new]
        position = last


def test_keyset_order_is_typed_and_keeps_microseconds(task_table: tuple[str, str]) -> None:
    url, table = task_table
    create_task_table(url, table)
    same = T0  # ids 8..11 share one timestamp: 9 < 10 only when compared as integers
    tick = T0 + dt.timedelta(microseconds=1)  # one microsecond later: a later row
    insert_tasks(url, table, _rows([11, 9, 10, 8, 2, 1], [same, same, same, same, tick, tick]))
    source = _source(url, table, batch=2)
    assert _walk(source, None) == ["8", "9", "10", "11", "1", "2"]
    # Resuming from (T0, 9) must give 10, 11 (a string compare would give neither).
    assert _walk(source, Position(_created(url, same), 9)) == ["10", "11", "1", "2"]
    # The cursor survives its JSON form with full precision and the id's type.
    _tasks, last = source.fetch(Position(_created(url, same), 11))
    assert last is not None
    again = Position.load(last.dump())
    assert again == last and isinstance(again.task_id, int)
    assert _walk(source, again) == []


def _created(url: str, value: dt.datetime) -> object:
    return value.isoformat(" ") if url.startswith("sqlite") else value


def test_cursor_moves_only_with_the_ledger_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    create_task_table(url, "PIC_MATCHTASK")
    insert_tasks(url, "PIC_MATCHTASK", _rows([1, 2], [T0, T0]))
    source = _source(url, "PIC_MATCHTASK")
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    new, last = source.fetch(None)
    assert last is not None
    assert ledger.add_tasks(new, ("sql", last.dump())) == 2
    assert ledger.cursor("sql") == last.dump()
    assert ledger.counts()["files"]["pending"] == 16
    # The same tasks again (a lookback): nothing added, nothing duplicated.
    assert ledger.add_tasks(new) == 0
    assert ledger.counts()["files"]["pending"] == 16


def test_lookback_finds_rows_committed_late(task_table: tuple[str, str]) -> None:
    url, table = task_table
    create_task_table(url, table)
    insert_tasks(url, table, _rows([1, 2, 3], [T0, T0 + dt.timedelta(minutes=1),
                                             T0 + dt.timedelta(minutes=20)]))
    source = _source(url, table, batch=2, lookback_min=10)
    cursor = Position(_created(url, T0 + dt.timedelta(minutes=20)), 3)
    # Committed late: 15 min before the cursor (inside the window) and 19 min + (outside).
    insert_tasks(url, table, _rows([40, 41], [T0 + dt.timedelta(minutes=15), T0]))
    start = source.lookback_start(cursor)
    assert start is not None
    found = []
    while start is not None:
        new, last = source.fetch(start, until=cursor)
        found += [t.task_id for t in new]
        start = last if last is not None and len(new) == source.batch_size else None
    assert found == ["40", "3"]


def test_oracle_sql_compiles_with_fetch_first_and_with_rownum_for_11g() -> None:
    source = SqlSource(sa.create_engine("sqlite://"), "jlyxz.PIC_MATCHTASK", "CREATED_TIME",
                       "TASK_ID", COLUMNS, 500, dt.timedelta(minutes=10))
    query = source.page_query(Position(T0, 9))
    modern = str(query.compile(dialect=oracle.dialect()))
    old = str(query.compile(dialect=oracle.dialect(enable_offset_fetch=False)))
    assert "FETCH FIRST" in modern and "ROWNUM" not in modern
    assert "ROWNUM" in old and "FETCH FIRST" not in old
    for sql in (modern, old):
        # Names unquoted, as written: Oracle folds them to upper case itself.
        assert "FROM jlyxz.PIC_MATCHTASK" in sql and '"' not in sql
        sql = sql.replace("jlyxz.PIC_MATCHTASK.", "")
        assert "CREATED_TIME > :after_created OR CREATED_TIME = :after_created2 AND " \
               "TASK_ID > :after_id" in sql
        assert "ORDER BY CREATED_TIME, TASK_ID" in sql


def test_oracle_11g_without_thick_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="lib_dir"):
        make_engine("oracle+oracledb://u:p@db:1521/?service_name=X", "11g", None)
    engine = make_engine("oracle+oracledb://u:p@db:1521/?service_name=X", None, None)
    assert engine.dialect.driver == "oracledb"  # thin mode: no Instant Client needed


def test_legacy_progress_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "sync_progress.json"
    path.write_text(json.dumps({"last_created_time": "2025-10-01 08:00:05",
                                "last_task_id": "1234",
                                "last_download_time": "2025-10-01 08:01:00"}))
    position = legacy_position(path)
    assert position == Position(dt.datetime(2025, 10, 1, 8, 0, 5), 1234)
    assert legacy_position(tmp_path / "absent.json") is None
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="sync_progress.json|legacy progress"):
        legacy_position(path)
