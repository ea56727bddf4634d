"""The seen-set: a chunk's new addresses are appended (one page per ~300 rows, not a page
of the B-tree each), looked up from memory until merged, and merged in key order with the
last row of a key winning, as the upsert per chunk did."""

from __future__ import annotations

from pathlib import Path

import pytest

from datahubsync.logs import queue as queue_module
from datahubsync.logs.queue import FileState, LogQueue


def _commit(queue: LogQueue, seen: dict[int, int], offset: int = 0) -> None:
    state = FileState("/logs/a.log", 1, 2, offset, b"", False)
    queue.commit_chunk(state, [f'{{"n": {offset}}}'], {("2025-12-09", "queued"): 1}, seen)


def _rows(queue: LogQueue, table: str) -> dict[int, int]:
    return dict(queue.db.execute(f"SELECT key, last_day FROM {table}"))  # noqa: S608


def test_appended_rows_are_found_before_and_after_the_merge(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    with LogQueue(path) as reader:
        _commit(reader, {1: 10, 2: 10})
        _commit(reader, {2: 11, 3: 9}, 1)  # key 2 again, a later row: it wins
        assert _rows(reader, "seen_ip") == {}  # nothing written into the set yet
        assert reader.last_seen_many([1, 2, 3, 4]) == {1: 10, 2: 11, 3: 9}
        with LogQueue(path) as other:  # what `logs status` counts meanwhile
            assert other.cached_ips() == 3
        assert reader.merge_seen() == 4
        assert _rows(reader, "seen_new") == {}
        assert _rows(reader, "seen_ip") == {1: 10, 2: 11, 3: 9}
        _commit(reader, {1: 12}, 2)  # seen again on a later day: the set moves on
        assert reader.cached_ips() == 3
        assert reader.merge_seen() == 1 and _rows(reader, "seen_ip")[1] == 12
    with LogQueue(path) as again:
        assert again.last_seen_many([1, 2, 3, 4]) == {1: 12, 2: 11, 3: 9}


def test_rows_a_killed_reader_left_are_found_once_merged(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    killed = LogQueue(path)
    _commit(killed, {7: 5})
    killed.db.close()  # no merge: as after a kill -9
    with LogQueue(path) as reader:
        assert reader.cached_ips() == 1
        assert reader.merge_seen() == 1  # what a pass does before it reads
        assert reader.last_seen_many([7]) == {7: 5}


def test_a_merge_every_merge_at_rows_bounds_memory(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_module, "MERGE_AT", 100)
    with LogQueue(tmp_path / "queue.db") as reader:
        for n in range(7):
            _commit(reader, {n * 40 + k: 3 for k in range(40)}, n)
            assert len(reader._appended) < 100
        assert len(_rows(reader, "seen_ip")) == 240  # merged twice, at 120 and 240 rows
        assert len(_rows(reader, "seen_new")) == 40
        assert reader.cached_ips() == 280
        assert reader.last_seen_many([0, 279, 280]) == {0: 3, 279: 3}
