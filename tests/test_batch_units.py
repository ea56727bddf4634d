"""Batch pieces in-process: ETA from a moving average, calendars, placeholders, liveness."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from datahubsync.batch.calendar import load_calendar, parse_day
from datahubsync.batch.progress import (
    ETA_WINDOW,
    DayOutcome,
    ProgressStore,
    Tracker,
    new_document,
    with_liveness,
)
from datahubsync.batch.units import render, render_argv
from datahubsync.core.errors import ConfigError, UsageError


class FakeClock:
    def __init__(self) -> None:
        self.now = dt.datetime(2025, 10, 18, 4, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def make_tracker(tmp_path: Path, days: int, workers: int = 1) -> tuple[Tracker, FakeClock]:
    clock = FakeClock()
    first = dt.date(2025, 10, 1)
    plan = {(first + dt.timedelta(n)).isoformat(): "pending" for n in range(days)}
    doc = new_document("t1", "job", "command", plan, first, first + dt.timedelta(days - 1),
                       workers, clock())
    tracker = Tracker(ProgressStore(tmp_path), doc, clock)
    tracker.start()
    return tracker, clock


def test_estimated_completion_is_a_moving_average_of_recent_days(tmp_path: Path) -> None:
    tracker, clock = make_tracker(tmp_path, days=10)
    durations = [100, 100, 10, 10, 10, 10, 10]  # the slow start drops out of the window
    for n, seconds in enumerate(durations):
        day = f"2025-10-{n + 1:02d}"
        tracker.day_started(day)
        clock.advance(seconds)
        tracker.day_finished(day, DayOutcome("success"), seconds)
    window = durations[-ETA_WINDOW:]
    remaining = 10 - len(durations)
    expected = clock.now + dt.timedelta(seconds=sum(window) / len(window) * remaining)
    saved = ProgressStore(tmp_path).load("t1")
    assert dt.datetime.fromisoformat(saved["estimated_completion"]) == expected
    assert saved["progress_percent"] == 70.0 and saved["current"] == 7


def test_eta_divides_by_workers_and_errors_keep_the_last_ten(tmp_path: Path) -> None:
    tracker, clock = make_tracker(tmp_path, days=14, workers=2)
    for n in range(13):
        day = f"2025-10-{n + 1:02d}"
        tracker.day_started(day)
        outcome = DayOutcome("success") if n == 0 else DayOutcome("failed", f"boom {n}")
        tracker.day_finished(day, outcome, 20)
    doc = tracker.doc
    assert [e["date"] for e in doc["errors"]] == [f"2025-10-{n + 1:02d}" for n in range(3, 13)]
    assert dt.datetime.fromisoformat(doc["estimated_completion"]) == \
        clock.now + dt.timedelta(seconds=20 * 1 / 2)
    clock.advance(90)
    tracker.finish("failed", "done")
    assert doc["duration_seconds"] == 90.0 and doc["end_time"] is not None


def test_restart_resets_interrupted_days_to_pending(tmp_path: Path) -> None:
    tracker, _ = make_tracker(tmp_path, days=3)
    tracker.day_started("2025-10-01")
    tracker.day_finished("2025-10-01", DayOutcome("success"), 1)
    tracker.day_started("2025-10-02")  # then the process dies
    doc = ProgressStore(tmp_path).load("t1")
    again = Tracker(ProgressStore(tmp_path), doc)
    again.start()
    assert [e["status"] for e in again.doc["days"].values()] == ["success", "pending",
                                                                  "pending"]
    assert again.doc["runs"] == 2


def test_a_running_document_without_its_process_reads_as_crashed(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    doc = {"status": "running", "pid": child.pid, "pid_start": "1",
           "host": __import__("socket").gethostname()}
    assert with_liveness(doc)["status"] == "crashed"
    import os

    from datahubsync.core.locking import process_start as _process_start

    mine = dict(doc, pid=os.getpid(), pid_start=_process_start(os.getpid()))
    assert with_liveness(mine)["status"] == "running"
    reused = dict(mine, pid_start="12345")  # same pid, another process: crashed
    assert with_liveness(reused)["status"] == "crashed"


def test_calendar_file_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "cal.txt"
    path.write_text("# holidays removed\n2025-10-09\n\n2025-10-1O\n")
    with pytest.raises(ConfigError, match=r"cal.txt: line 4: not a date"):
        load_calendar(path)
    path.write_text("\ufeff2025-10-09  # Thursday\n2025-10-10\n")
    cal = load_calendar(path)
    assert cal.is_trading_day(dt.date(2025, 10, 9))
    assert not cal.is_trading_day(dt.date(2025, 10, 8))
    with pytest.raises(ConfigError, match="cannot read"):
        load_calendar(tmp_path / "missing.txt")


@pytest.mark.parametrize("text", ["2025-1-01", "20251001", "2025-02-30", "", "2025-10-01T00"])
def test_parse_day_is_strict(text: str) -> None:
    with pytest.raises(UsageError, match="start_date: expected a date"):
        parse_day(text, "start_date")


def test_placeholders() -> None:
    day = dt.date(2025, 10, 3)
    assert render("/data/{date}/*.csv", day) == "/data/2025-10-03/*.csv"
    assert render("/data/{date:%Y%m%d}.csv", day) == "/data/20251003.csv"
    assert render_argv(["x", "--day={date}"], day) == ["x", "--day=2025-10-03"]
    with pytest.raises(ConfigError, match="only {date}"):
        render("/data/{day}.csv", day)
