"""``datahubsync pictures`` end to end: the CLI against a real ``serve`` and real task tables.

Every existing picture must end up in the mirror byte-identical, every missing
one recorded, whatever happens on the way (server down, kill -9 of the client).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.crashkit import killed_at
from tests.helpers import clean_env, cli_argv, free_port, run_cli, wait_until, write_yaml
from tests.pictures_client_kit import (
    T0,
    TaskRow,
    check_mirror,
    create_task_table,
    insert_tasks,
    make_pictures,
    pictures_config,
    sqlite_tasks,
    start_server,
)


def _status(config: Path) -> dict:
    return run_cli(["--json", "pictures", "status", "--limit", "500"], config=config).json()


def _mirror_count(root: Path) -> int:
    return sum(1 for p in root.rglob("*.jpg")) if root.exists() else 0


def test_tasks_with_missing_pictures_on_every_database(tmp_path: Path,
                                                       task_table: tuple[str, str]) -> None:
    url, table = task_table
    pics = make_pictures(tmp_path / "srv", 12, missing=5)
    create_task_table(url, table)
    insert_tasks(url, table, pics.tasks)
    server = start_server(tmp_path, pics.root)
    try:
        config = pictures_config(tmp_path, server.url, url, table)
        result = run_cli(["--json", "pictures", "once"], config=config).json()
        assert result["new_tasks"] == 12 and result["downloaded"] == 91
        assert result["missing"] == 5 and result["failed"] == 0
        assert check_mirror(pics, tmp_path / "mirror") == []
        status = _status(config)
        assert {p["remote"] for p in status["problems"] if p["state"] == "missing"} \
            == pics.missing
        assert status["files"]["downloaded"] == 91 and status["tasks"]["downloaded"] == 12
        # A second pass finds nothing new and downloads nothing again.
        again = run_cli(["--json", "pictures", "once"], config=config).json()
        assert again["new_tasks"] == 0 and again["downloaded"] == 0
    finally:
        server.stop()


def test_server_down_mid_run_then_back(tmp_path: Path) -> None:
    pics = make_pictures(tmp_path / "srv", 60, missing=3, size=(20000, 60000))
    url, table = sqlite_tasks(tmp_path, pics.tasks)
    port = free_port()
    server = start_server(tmp_path, pics.root, port=port)
    config = pictures_config(tmp_path, f"http://127.0.0.1:{port}", url, table, workers=2,
                             retry_initial=0.2, retry_max=0.5, stall_timeout=600)
    log = tmp_path / "client.log"
    client = subprocess.Popen(cli_argv() + ["--config", str(config), "pictures", "run"],
                              stdout=subprocess.DEVNULL, stderr=log.open("wb"),
                              env=clean_env())
    try:
        mirror = tmp_path / "mirror"
        wait_until(lambda: _mirror_count(mirror) >= 30, "30 pictures in the mirror", timeout=30,
                   interval=0.01, fail=False)
        server.stop()  # SIGTERM: its forked workers go too (SIGKILL would orphan them)
        stopped_at = _mirror_count(mirror)
        assert stopped_at < len(pics.content), "the server went down after the last file"
        time.sleep(1.5)  # the client keeps failing and backing off meanwhile
        assert client.poll() is None
        server.start()
        counts: dict[str, int] = {}

        def accounted() -> bool:
            nonlocal counts
            counts = _status(config)["files"]
            return counts["downloaded"] + counts["missing"] == 480

        wait_until(accounted, "every file downloaded or missing", timeout=60, interval=0.2,
                   fail=False)
        assert check_mirror(pics, mirror) == []
        assert counts["missing"] == 3 and counts["failed"] == 0
    finally:
        client.send_signal(signal.SIGTERM)
        client.wait(20)
        server.stop()
    text = log.read_text()
    assert "Connection refused" in text and "transfers failed this pass" in text


KILLED_AT = ["pictures.tasks_added:1", "pictures.file_written:10",
             "pictures.outcomes_recorded:1", "pictures.file_written:150"]


def test_kill_9_at_each_point_then_rerun(tmp_path: Path) -> None:
    pics = make_pictures(tmp_path / "srv", 80, missing=4, size=(30000, 90000))
    url, table = sqlite_tasks(tmp_path, pics.tasks)
    server = start_server(tmp_path, pics.root)
    try:
        config = pictures_config(tmp_path, server.url, url, table, workers=4)
        mirror = tmp_path / "mirror"
        for point in KILLED_AT:
            killed_at(point, ["pictures", "once"], config=config)
        assert _mirror_count(mirror) < len(pics.content), "killed too late to prove anything"
        run_cli(["pictures", "once"], config=config)
        assert check_mirror(pics, mirror) == []
        status = _status(config)
        assert status["files"]["downloaded"] == len(pics.content)
        assert {p["remote"] for p in status["problems"]} == pics.missing
    finally:
        server.stop()


def test_legacy_tcp_transport(tmp_path: Path) -> None:
    pics = make_pictures(tmp_path / "srv", 6, missing=2)
    url, table = sqlite_tasks(tmp_path, pics.tasks)
    tcp_port = free_port()
    server = start_server(tmp_path, pics.root, legacy_tcp={"host": "127.0.0.1",
                                                           "port": tcp_port})
    try:
        config = pictures_config(tmp_path, None, url, table, transport="legacy-tcp",
                                 legacy_host="127.0.0.1", legacy_port=tcp_port)
        result = run_cli(["--json", "pictures", "once"], config=config).json()
        assert result["downloaded"] == 46 and result["missing"] == 2
        assert check_mirror(pics, tmp_path / "mirror") == []
        # A file already there with the right size is skipped: the size is in the header.
        again = run_cli(["--json", "pictures", "retry", "--failed"], config=config).json()
        assert again["changed"] == 2
        second = run_cli(["--json", "pictures", "once"], config=config).json()
        assert second["missing"] == 2 and second["downloaded"] == 0
    finally:
        server.stop()


def test_existing_right_size_skipped_wrong_size_replaced(tmp_path: Path) -> None:
    pics = make_pictures(tmp_path / "srv", 1)
    url, table = sqlite_tasks(tmp_path, pics.tasks)
    mirror = tmp_path / "mirror"
    paths = sorted(pics.content)
    good, bad = pics.local(mirror, paths[0]), pics.local(mirror, paths[1])
    good.parent.mkdir(parents=True)
    good.write_bytes(pics.content[paths[0]])
    bad.write_bytes(b"truncated by the old client")
    server = start_server(tmp_path, pics.root)
    try:
        config = pictures_config(tmp_path, server.url, url, table)
        result = run_cli(["--json", "pictures", "once"], config=config).json()
        assert result["skipped"] == 1 and result["downloaded"] == 7
        assert check_mirror(pics, mirror) == []
    finally:
        server.stop()


def test_unsafe_task_paths_are_refused_not_written(tmp_path: Path) -> None:
    pics = make_pictures(tmp_path / "srv", 1)
    evil = TaskRow(99, T0 + dt.timedelta(hours=1),
                   ["D:\\pic\\..\\..\\outside.jpg", "\\\\host\\share\\x.jpg", "D:pic\\rel.jpg",
                    *pics.tasks[0].paths[:5]])
    url, table = sqlite_tasks(tmp_path, [*pics.tasks, evil])
    server = start_server(tmp_path, pics.root)
    try:
        config = pictures_config(tmp_path, server.url, url, table, local_root=str(
            tmp_path / "a" / "b" / "mirror"))
        result = run_cli(["--json", "pictures", "once"], config=config, expect=1).json()
        assert result["failed"] == 3
        assert not list(tmp_path.glob("**/outside.jpg")) and not list(tmp_path.glob("**/x.jpg"))
        problems = _status(config)["problems"]
        assert sorted(p["idx"] for p in problems) == [0, 1, 2]
        assert all("refused" in p["last_error"] for p in problems)
    finally:
        server.stop()


def test_legacy_progress_file_and_lookback(tmp_path: Path) -> None:
    pics = make_pictures(tmp_path / "srv", 10, step=dt.timedelta(minutes=1))
    url, table = sqlite_tasks(tmp_path, pics.tasks)
    legacy = tmp_path / "sync_progress.json"
    sixth = pics.tasks[5]
    legacy.write_text(json.dumps({"last_created_time": sixth.created.isoformat(" "),
                                  "last_task_id": sixth.task_id,
                                  "last_download_time": "2025-10-01 09:00:00"}))
    server = start_server(tmp_path, pics.root)
    try:
        config = pictures_config(tmp_path, server.url, url, table, legacy_progress_file=str(legacy),
                                 lookback_minutes=3)
        result = run_cli(["--json", "pictures", "once"], config=config).json()
        # Tasks 7..10 are new; the lookback (3 min before task 6) brings 3..6 too:
        # rows the ledger lacks, exactly what a late commit looks like.
        assert result["new_tasks"] == 4 and result["late_tasks"] == 4
        got = {t for t in (p.stem.split("_")[0] for p in (tmp_path / "mirror").rglob("*.jpg"))}
        assert got == {"3", "4", "5", "6", "7", "8", "9", "10"}
        # A row committed late, 2 minutes before the cursor: found by the lookback.
        late = make_pictures(tmp_path / "srv", 1, first_id=500, seed=5,
                             start=pics.tasks[-1].created - dt.timedelta(minutes=2))
        # ... and one far older than the window: not found (that is what the window means).
        old = make_pictures(tmp_path / "srv", 1, first_id=600, seed=6,
                            start=pics.tasks[0].created)
        insert_tasks(url, table, late.tasks + old.tasks)
        result = run_cli(["--json", "pictures", "once"], config=config).json()
        assert result["late_tasks"] == 1 and result["new_tasks"] == 0
        assert check_mirror(late, tmp_path / "mirror") == []
        assert not list((tmp_path / "mirror").rglob("600_*.jpg"))
    finally:
        server.stop()


def test_stall_exits_nonzero_and_supervise_restarts(tmp_path: Path) -> None:
    pics = make_pictures(tmp_path / "srv", 2)
    url, table = sqlite_tasks(tmp_path, pics.tasks)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every transfer fails
    config = pictures_config(tmp_path, dead, url, table, stall_timeout=1, poll_interval=0.1,
                             retry_initial=0.1, retry_max=0.1, supervise_delay=0.1)
    result = run_cli(["pictures", "run"], config=config, expect=1, timeout=120)
    assert "no progress for" in result.err and "Connection refused" in result.err
    log_path = tmp_path / "supervise.log"
    supervisor = subprocess.Popen(
        cli_argv() + ["--config", str(config), "pictures", "run", "--supervise"],
        stdout=subprocess.DEVNULL, stderr=log_path.open("wb"), env=clean_env())
    try:
        wait_until(lambda: log_path.read_text().count("worker exited 1; restarting") >= 2
                   or supervisor.poll() is not None, "two restarts by the supervisor",
                   timeout=120, interval=0.1, detail=log_path.read_text)
        assert supervisor.poll() is None, "the supervisor should live on"
    finally:
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(30)
    log = log_path.read_text()
    assert log.count("worker exited 1; restarting") >= 2, log
    assert code == 130
    assert os.environ.get("PATH") == clean_env()["PATH"]


def test_sd_notify_ready_and_watchdog(tmp_path: Path) -> None:
    pics = make_pictures(tmp_path / "srv", 2)
    url, table = sqlite_tasks(tmp_path, pics.tasks)
    server = start_server(tmp_path, pics.root)
    sock_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.settimeout(20)
    config = pictures_config(tmp_path, server.url, url, table)
    client = subprocess.Popen(cli_argv() + ["--config", str(config), "pictures", "run"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=clean_env({"NOTIFY_SOCKET": str(sock_path)}))
    try:
        seen: list[str] = []
        while not ("READY=1" in seen and "WATCHDOG=1" in seen):
            seen.append(listener.recv(4096).decode())
        assert seen.index("READY=1") < seen.index("WATCHDOG=1")
        assert check_mirror(pics, tmp_path / "mirror") == []
    finally:
        client.send_signal(signal.SIGTERM)
        client.wait(20)
        listener.close()
        server.stop()


def test_config_errors_are_clear(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yaml", {"state_dir": str(tmp_path / "s"),
                                              "pictures": {"server_url": "http://x"}})
    result = run_cli(["pictures", "once"], config=config, expect=2)
    assert "pictures.database_url" in result.err
    config = write_yaml(tmp_path / "c.yaml", {"pictures": {"workerz": 3}})
    assert "pictures.workerz: unknown key" in run_cli(["pictures", "status"], config=config,
                                                      expect=2).err


@pytest.mark.parametrize("args", [["run", "--help"], ["once", "--help"], ["retry", "--help"]])
def test_help_explains(args: list[str]) -> None:
    out = run_cli(["pictures", *args]).out
    assert "Exit status" in out


def test_doctor_checks_table_server_and_ledger(tmp_path: Path) -> None:
    pics = make_pictures(tmp_path / "srv", 1)
    url, table = sqlite_tasks(tmp_path, pics.tasks)
    server = start_server(tmp_path, pics.root)
    try:
        config = pictures_config(tmp_path, server.url, url, table)
        doc = run_cli(["--json", "doctor"], config=config).json()
        checks = {c["name"]: c for c in doc["checks"]}
        assert checks["pictures task table"]["ok"] and "has rows" in \
            checks["pictures task table"]["detail"]
        assert checks["picture server"]["ok"] and checks["pictures ledger"]["ok"]
        bad = pictures_config(tmp_path, f"http://127.0.0.1:{free_port()}", url, "NO_SUCH_TABLE",
                              name="bad.yaml")
        doc = run_cli(["--json", "doctor"], config=bad, expect=1).json()
        failed = {c["name"]: c for c in doc["checks"] if not c["ok"]}
        assert "no such table" in failed["pictures task table"]["detail"].lower()
        assert "refused" in failed["picture server"]["detail"].lower()
    finally:
        server.stop()


def test_a_refused_token_stops_the_pass_and_spends_no_attempt(tmp_path: Path) -> None:
    """401 from our picture server: exit 2 naming pictures.token, no file counted as an
    attempt (no backoff to wait out); with the right token the next pass fetches all."""
    pics = make_pictures(tmp_path / "srv", 2)
    url, table = sqlite_tasks(tmp_path, pics.tasks)
    server = start_server(tmp_path, pics.root)
    try:
        wrong = pictures_config(tmp_path, server.url, url, table, name="wrong.yaml",
                                token="not-the-token", retry_initial=3600, retry_max=3600)
        refused = run_cli(["pictures", "once"], config=wrong, expect=2)
        assert "refused pictures.token" in refused.err and "not-the-token" not in refused.err
        status = _status(wrong)
        assert _mirror_count(tmp_path / "mirror") == 0
        assert status["problems"] == [], status  # no file has an attempt or an error
        right = pictures_config(tmp_path, server.url, url, table, retry_initial=3600,
                                retry_max=3600)
        result = run_cli(["--json", "pictures", "once"], config=right).json()
        assert result["downloaded"] == 16 and check_mirror(pics, tmp_path / "mirror") == []
    finally:
        server.stop()
