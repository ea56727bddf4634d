"""`datahubsync batch` against a real PostgreSQL, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.batchkit import (
    all_rows,
    batch_config,
    create_table,
    day_counts,
    distinct_per_day,
    glob_job,
    running_day,
    slow_job,
    task_docs,
    weekdays,
    write_day,
)
from tests.crashkit import killed_at
from tests.helpers import clean_env, cli_argv, run_cli, wait_until


@pytest.fixture
def table(pg_url: str, pg_table: str) -> str:
    create_table(pg_url, pg_table)
    return pg_table


def background(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(cli_argv() + ["--config", str(config), "batch", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env())


def test_trading_and_non_trading_days(tmp_path: Path, pg_url: str, table: str) -> None:
    folder = tmp_path / "csv"
    for day in weekdays("2025-09-29", "2025-10-10"):
        write_day(folder, day, rows=5)
    calendar = tmp_path / "trading_days.txt"
    # China's National Day week: 2025-10-01..08 closed; the file says so.
    calendar.write_text("# trading days\n2025-09-29\n2025-09-30\n2025-10-09\n2025-10-10\n")
    config = batch_config(tmp_path, {"bars": glob_job(pg_url, table, folder)})

    result = run_cli(["--json", "batch", "run", "--job", "bars", "--from", "2025-09-29",
                      "--to", "2025-10-10"], config=config)
    doc = result.json()
    assert doc["status"] == "completed"
    assert (doc["total"], doc["success"], doc["failed"], doc["skipped"]) == (12, 10, 0, 2)
    assert doc["days"]["2025-10-04"] == {"status": "skipped", "reason": "not a trading day"}
    assert doc["progress_percent"] == 100.0
    assert day_counts(pg_url, table) == {d: 5 for d in weekdays("2025-09-29", "2025-10-10")}

    with_cal = run_cli(["--json", "batch", "run", "--job", "bars", "--from", "2025-09-29",
                        "--to", "2025-10-10", "--calendar", str(calendar)], config=config).json()
    assert (with_cal["success"], with_cal["skipped"]) == (4, 8)
    assert with_cal["days"]["2025-10-01"]["status"] == "skipped"
    assert with_cal["days"]["2025-10-09"]["status"] == "success"


def test_malformed_row_fails_only_that_day(tmp_path: Path, pg_url: str, table: str) -> None:
    folder = tmp_path / "csv"
    good = ["2025-10-06", "2025-10-07", "2025-10-09"]
    for day in good:
        write_day(folder, day, rows=6)
    write_day(folder, "2025-10-08", rows=6, bad_line=4)
    config = batch_config(tmp_path, {"bars": glob_job(pg_url, table, folder)})

    result = run_cli(["--json", "batch", "run", "--job", "bars", "--from", "2025-10-06",
                      "--to", "2025-10-09"], config=config, expect=1)
    doc = result.json()
    assert doc["status"] == "failed"
    assert (doc["success"], doc["failed"]) == (3, 1)
    [error] = doc["errors"]
    assert error["date"] == "2025-10-08"
    assert "2025-10-08.csv" in error["error"] and "line 4" in error["error"]
    assert "abc" in error["error"]
    # The bad day left nothing behind, not even its good rows 2 and 3.
    assert day_counts(pg_url, table) == {d: 6 for d in good}
    # And the persisted document says the same as the output.
    [saved] = task_docs(tmp_path / "state")
    assert saved["days"]["2025-10-08"]["status"] == "failed"
    assert saved["errors"] == doc["errors"]


def test_rerunning_a_finished_range_changes_nothing(tmp_path: Path, pg_url: str,
                                                   table: str) -> None:
    folder = tmp_path / "csv"
    for day in weekdays("2025-10-06", "2025-10-10"):
        write_day(folder, day, rows=7)
    config = batch_config(tmp_path, {"bars": glob_job(pg_url, table, folder)})
    argv = ["--json", "batch", "run", "--job", "bars", "--from", "2025-10-06", "--to",
            "2025-10-10"]
    run_cli(argv, config=config)
    before = all_rows(pg_url, table)
    assert len(before) == 35
    second = run_cli(argv, config=config).json()
    assert second["status"] == "completed"
    assert all_rows(pg_url, table) == before
    # resuming the finished task is a no-op too
    again = run_cli(["--json", "batch", "resume", second["task_id"]], config=config).json()
    assert again["status"] == "completed" and all_rows(pg_url, table) == before


def test_kill_9_mid_day_then_resume(tmp_path: Path, pg_url: str, table: str) -> None:
    marker = tmp_path / "half-"
    config = batch_config(tmp_path, {"slow": slow_job(tmp_path, pg_url, table, rows=40,
                                                      delay=0.03, marker=marker)})
    # Rows from an earlier load of the first day must be replaced, not added to.
    with __import__("psycopg").connect(pg_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {table} VALUES ('2025-10-06', 'old', 1)")
    proc = background(config, "run", "--job", "slow", "--from", "2025-10-06", "--to",
                      "2025-10-08")
    state = tmp_path / "state"
    wait_until(lambda: Path(f"{marker}2025-10-07").exists(), "day 2 half sent", timeout=30,
               interval=0.02)
    task_id, day = running_day(state) or ("", "")
    assert day == "2025-10-07"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    # Day 1 committed, day 2's open transaction rolled back with the dead connection.
    wait_until(lambda: day_counts(pg_url, table) == {"2025-10-06": 40}, "day 2 rolled back",
               timeout=10, interval=0.02)
    status = run_cli(["--json", "batch", "status", task_id], config=config).json()
    assert status["status"] == "crashed"
    assert status["days"]["2025-10-06"]["status"] == "success"

    resumed = run_cli(["--json", "batch", "resume", task_id], config=config).json()
    assert resumed["status"] == "completed"
    assert resumed["runs"] == 2
    assert day_counts(pg_url, table) == {d: 40 for d in ("2025-10-06", "2025-10-07",
                                                         "2025-10-08")}
    assert distinct_per_day(pg_url, table) == day_counts(pg_url, table)
    # Day 1 was done before the crash: resume did not run it again.
    assert resumed["days"]["2025-10-06"]["finished_at"] == \
        status["days"]["2025-10-06"]["finished_at"]


KILLED_AT = ["batch.day_loaded:2", "batch.day_committed:1", "batch.day_recorded:2"]


def test_kill_9_at_each_point_then_resume(tmp_path: Path, pg_url: str, table: str) -> None:
    """run, then resume after each kill: every day ends with its rows once, none lost."""
    folder = tmp_path / "csv"
    week = weekdays("2025-10-06", "2025-10-10")
    for day in week:
        write_day(folder, day, rows=5)
    config = batch_config(tmp_path, {"bars": glob_job(pg_url, table, folder)}, workers=1)
    killed_at(KILLED_AT[0], ["batch", "run", "--job", "bars", "--from", week[0], "--to",
                             week[-1]], config=config)
    (doc,) = task_docs(tmp_path / "state")
    # day 1 committed; day 2's transaction died with its connection
    wait_until(lambda: day_counts(pg_url, table) == {week[0]: 5}, "day 2 rolled back",
               timeout=30, interval=0.02)
    killed_at(KILLED_AT[1], ["batch", "resume", doc["task_id"]], config=config)
    assert day_counts(pg_url, table) == {week[0]: 5, week[1]: 5}  # committed, not recorded
    killed_at(KILLED_AT[2], ["batch", "resume", doc["task_id"]], config=config)
    status = run_cli(["--json", "batch", "status", doc["task_id"]], config=config).json()
    assert status["status"] == "crashed"
    assert [status["days"][d]["status"] for d in week[:3]] == ["success"] * 3
    resumed = run_cli(["--json", "batch", "resume", doc["task_id"]], config=config).json()
    assert resumed["status"] == "completed" and resumed["success"] == 5
    assert day_counts(pg_url, table) == {d: 5 for d in week}
    assert distinct_per_day(pg_url, table) == day_counts(pg_url, table)


def test_second_run_on_the_same_target_is_refused(tmp_path: Path, pg_url: str,
                                                  table: str) -> None:
    folder = tmp_path / "csv"
    write_day(folder, "2025-10-06", rows=3)
    jobs = {"slow": slow_job(tmp_path, pg_url, table, rows=200, delay=0.02),
            "fast": glob_job(pg_url, table, folder)}
    config = batch_config(tmp_path, jobs)
    first = background(config, "run", "--job", "slow", "--from", "2025-10-06", "--to",
                       "2025-10-07")
    try:
        task_id, _ = wait_until(lambda: running_day(tmp_path / "state"), "first run",
                                timeout=30, interval=0.02)
        refused = run_cli(["batch", "run", "--job", "fast", "--from", "2025-10-06", "--to",
                           "2025-10-06"], config=config, expect=75)
        assert task_id in refused.err and "already running" in refused.err
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)


def test_postgres_advisory_lock_spans_hosts(tmp_path: Path, pg_url: str, table: str) -> None:
    """Two hosts (two state dirs) sharing one target: the second is refused by PostgreSQL."""
    folder = tmp_path / "csv"
    write_day(folder, "2025-10-06", rows=3)
    host_a = batch_config(tmp_path, {"load": slow_job(tmp_path, pg_url, table, rows=200,
                                                      delay=0.02)},
                          name="a.yaml", state="state-a", lock="postgres")
    host_b = batch_config(tmp_path, {"load": glob_job(pg_url, table, folder)},
                          name="b.yaml", state="state-b", lock="postgres")
    first = background(host_a, "run", "--job", "load", "--from", "2025-10-06", "--to",
                       "2025-10-07")
    try:
        task_id, _ = wait_until(lambda: running_day(tmp_path / "state-a"), "host a",
                                timeout=30, interval=0.02)
        refused = run_cli(["batch", "run", "--job", "load", "--from", "2025-10-06", "--to",
                           "2025-10-06"], config=host_b, expect=75)
        assert task_id in refused.err and "advisory lock" in refused.err
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 130
    # Once host a is gone, host b gets the lock.
    run_cli(["batch", "run", "--job", "load", "--from", "2025-10-06", "--to", "2025-10-06"],
            config=host_b)


def test_cancel_rolls_back_the_current_day_and_resume_finishes(tmp_path: Path, pg_url: str,
                                                               table: str) -> None:
    marker = tmp_path / "half-"
    config = batch_config(tmp_path, {"slow": slow_job(tmp_path, pg_url, table, rows=60,
                                                      delay=0.03, marker=marker)})
    proc = background(config, "run", "--json", "--job", "slow", "--from", "2025-10-06",
                      "--to", "2025-10-09")
    wait_until(lambda: Path(f"{marker}2025-10-07").exists(), "day 2 half sent", timeout=30,
               interval=0.02)
    task_id, _ = running_day(tmp_path / "state") or ("", "")
    cancel = run_cli(["--json", "batch", "cancel", task_id], config=config).json()
    assert cancel["cancel_requested"] is True
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    doc = json.loads(out)
    assert doc["status"] == "cancelled"
    assert doc["days"]["2025-10-07"]["status"] == "cancelled"
    assert doc["days"]["2025-10-08"]["status"] == "pending"
    assert day_counts(pg_url, table) == {"2025-10-06": 60}  # day 2 rolled back

    listed = run_cli(["--json", "batch", "list"], config=config).json()["tasks"]
    assert [(t["task_id"], t["status"]) for t in listed] == [(task_id, "cancelled")]

    resumed = run_cli(["--json", "batch", "resume", task_id], config=config).json()
    assert resumed["status"] == "completed"
    assert day_counts(pg_url, table) == {d: 60 for d in weekdays("2025-10-06", "2025-10-09")}


def test_progress_file_is_never_torn(tmp_path: Path, pg_url: str, table: str) -> None:
    folder = tmp_path / "csv"
    for day in weekdays("2025-06-02", "2025-08-29"):
        write_day(folder, day, rows=2)
    config = batch_config(tmp_path, {"bars": glob_job(pg_url, table, folder)})
    proc = background(config, "run", "--job", "bars", "--from", "2025-06-02", "--to",
                      "2025-08-31")
    tasks = tmp_path / "state" / "batch" / "tasks"
    reads, states = 0, set()
    while proc.poll() is None or reads == 0:
        for path in tasks.glob("*.json"):
            doc = json.loads(path.read_bytes())  # raises on a torn document
            reads += 1
            states.add(doc["status"])
            assert doc["success"] + doc["failed"] + doc["skipped"] == doc["current"]
            assert 0 <= doc["progress_percent"] <= 100
    assert proc.wait() == 0
    final = task_docs(tmp_path / "state")[0]
    assert final["status"] == "completed" and final["success"] == 65
    assert reads > 20 and "running" in states


def test_command_jobs_run_per_day_with_a_timeout(tmp_path: Path) -> None:
    out = tmp_path / "out"
    script = ("import sys, time, pathlib; d = sys.argv[1]; "
              "time.sleep(30) if d == '2025-10-08' else None; "
              f"pathlib.Path({str(out)!r}, d).write_text(d)")
    out.mkdir()
    job = {"kind": "command", "command": [sys.executable, "-c", script, "{date}"],
           "timeout": 2}
    config = batch_config(tmp_path, {"export": job})
    started = time.monotonic()
    doc = run_cli(["--json", "batch", "run", "--from", "2025-10-06", "--to", "2025-10-09"],
                  config=config, expect=1).json()
    assert time.monotonic() - started < 20
    assert sorted(p.name for p in out.iterdir()) == ["2025-10-06", "2025-10-07", "2025-10-09"]
    assert doc["days"]["2025-10-08"]["status"] == "failed"
    assert "timed out after 2s" in doc["days"]["2025-10-08"]["error"]


def test_dry_run_changes_nothing(tmp_path: Path, pg_url: str, table: str) -> None:
    folder = tmp_path / "csv"
    write_day(folder, "2025-10-06", rows=3)
    config = batch_config(tmp_path, {"bars": glob_job(pg_url, table, folder)})
    result = run_cli(["--json", "batch", "run", "--job", "bars", "--from", "2025-10-04",
                      "--to", "2025-10-07", "--dry-run"], config=config).json()
    assert [(d["date"], d["action"]) for d in result["days"]] == [
        ("2025-10-04", "skip"), ("2025-10-05", "skip"), ("2025-10-06", "run"),
        ("2025-10-07", "run")]
    assert "1 file(s)" in result["days"][2]["detail"]
    assert "0 file(s)" in result["days"][3]["detail"]
    assert day_counts(pg_url, table) == {}
    assert not (tmp_path / "state" / "batch").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--from", "2025-13-01", "--to", "2025-12-31"], "--from: expected a date"),
    (["--from", "2025-10-09", "--to", "2025-10-01"], "end_date: 2025-10-01 is before"),
    (["--from", "2024-01-01", "--to", "2025-12-31"], "more than batch.max_days (366)"),
    (["--job", "nope", "--from", "2025-10-01", "--to", "2025-10-02"], "no job 'nope'"),
])
def test_bad_requests_exit_2_with_a_clear_message(tmp_path: Path, args: list[str],
                                                  message: str) -> None:
    config = batch_config(tmp_path, {"a": {"kind": "command", "command": ["true"]},
                                     "b": {"kind": "command", "command": ["true"]}},
                          default_job="a")
    result = run_cli(["batch", "run", *args], config=config, expect=2)
    assert message in result.err


def test_bad_job_config_names_the_key(tmp_path: Path) -> None:
    config = batch_config(tmp_path, {"bars": {"kind": "pg-copy", "database_url": "x",
                                              "table": "t; DROP TABLE x",
                                              "date_column": "d",
                                              "source": {"glob": "a"}}})
    result = run_cli(["batch", "list"], config=config, expect=2)
    assert "batch.jobs.bars" in result.err and "table" in result.err


def test_workers_load_several_days_at_once(tmp_path: Path, pg_url: str, table: str) -> None:
    config = batch_config(tmp_path, {"slow": slow_job(tmp_path, pg_url, table, rows=20,
                                                      delay=0.02)})
    doc = run_cli(["--json", "batch", "run", "--job", "slow", "--workers", "3", "--from",
                   "2025-10-06", "--to", "2025-10-10"], config=config).json()
    assert doc["status"] == "completed" and doc["workers"] == 3
    assert day_counts(pg_url, table) == {d: 20 for d in weekdays("2025-10-06", "2025-10-10")}
    spans = sorted((e["started_at"], e["finished_at"]) for e in doc["days"].values())
    overlapping = sum(1 for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1])
    assert overlapping >= 2  # days ran side by side, not one after another


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    import pty

    config = batch_config(tmp_path, {"noop": {"kind": "command", "command": ["true"]}})
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(cli_argv() + ["--config", str(config), "batch", "run", "--from",
                                          "2025-10-06", "--to", "2025-10-10"],
                            stdin=terminal, stdout=terminal, stderr=terminal, env=clean_env())
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    assert proc.wait(30) == 0
    text = output.decode(errors="replace")
    assert "5/5" in text  # rich's M/N column
    assert "completed" in text


def test_column_mapping_encoding_and_wrongly_dated_rows(tmp_path: Path, pg_url: str,
                                                        table: str) -> None:
    folder = tmp_path / "csv"
    folder.mkdir()
    # No header, columns in another order, GBK bytes (as the production CSVs are).
    (folder / "2025-10-06.csv").write_bytes("浦发银行;2025-10-06;10.5\r\n平安银行;2025-10-06;11\r\n"
                                            .encode("gbk"))
    # A row dated another day would be deleted by the wrong day's re-run: refuse it.
    (folder / "2025-10-07.csv").write_bytes("招商银行;2025-10-07;1\r\n招商银行;2025-10-08;2\r\n"
                                            .encode("gbk"))
    job = glob_job(pg_url, table, folder, header=False, delimiter=";", encoding="GBK",
                   columns=["code", "trade_date", "close"])
    config = batch_config(tmp_path, {"bars": job})
    doc = run_cli(["--json", "batch", "run", "--from", "2025-10-06", "--to", "2025-10-07"],
                  config=config, expect=1).json()
    assert doc["days"]["2025-10-06"]["status"] == "success"
    assert doc["days"]["2025-10-07"]["status"] == "failed"
    assert "1 of 2 rows are not dated 2025-10-07" in doc["days"]["2025-10-07"]["error"]
    rows = all_rows(pg_url, table)
    assert [(r[1], str(r[2])) for r in rows] == [("平安银行", "11"), ("浦发银行", "10.5")]


def test_a_failing_source_command_fails_its_day_and_loads_nothing(tmp_path: Path,
                                                                  pg_url: str,
                                                                  table: str) -> None:
    script = ("import sys; d = sys.argv[1]; print('trade_date,code,close'); "
              "print(f'{{d}},600000,1', flush=True); "  # a literal brace is doubled
              "sys.exit('upstream export failed') if d.endswith('07') else None")
    job = {"kind": "pg-copy", "database_url": pg_url, "table": table,
           "date_column": "trade_date",
           "source": {"command": [sys.executable, "-c", script, "{date}"]}}
    config = batch_config(tmp_path, {"bars": job})
    doc = run_cli(["--json", "batch", "run", "--from", "2025-10-06", "--to", "2025-10-08"],
                  config=config, expect=1).json()
    assert doc["days"]["2025-10-07"]["status"] == "failed"
    assert "exit 1: upstream export failed" in doc["days"]["2025-10-07"]["error"]
    assert day_counts(pg_url, table) == {"2025-10-06": 1, "2025-10-08": 1}

    job["source"]["command"][2] = "print(f'{d}')"  # a single brace: refused up front
    config = batch_config(tmp_path, {"bars": job})
    refused = run_cli(["batch", "run", "--from", "2025-10-06", "--to", "2025-10-08"],
                      config=config, expect=2)
    assert "batch.jobs.bars: bad placeholder" in refused.err and "{{" in refused.err


def test_doctor_checks_each_job_table_and_the_calendar(tmp_path: Path, pg_url: str,
                                                       table: str) -> None:
    folder = tmp_path / "csv"
    calendar = tmp_path / "cal.txt"
    calendar.write_text("2019-01-02\n")
    jobs = {"good": glob_job(pg_url, table, folder),
            "nocol": glob_job(pg_url, table, folder, date_column="tradedate"),
            "down": glob_job("postgresql://postgres:pw@127.0.0.1:1/test", table, folder)}
    config = batch_config(tmp_path, jobs, calendar=str(calendar))
    result = run_cli(["--json", "doctor"], config=config, expect=1).json()
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["batch job good"]["ok"] is True
    assert checks["batch job nocol"]["ok"] is False
    assert "tradedate" in checks["batch job nocol"]["detail"]
    assert checks["batch job down"]["ok"] is False
    assert ":pw@" not in json.dumps(result) and "***" in checks["batch job down"]["detail"]
    assert checks["batch calendar"]["ok"] is False
    assert "no trading day in" in checks["batch calendar"]["detail"]
