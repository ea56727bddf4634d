"""`datahubsync logs` end to end: real log files, the real CLI, a real `serve` receiving."""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.crashkit import killed_at
from tests.helpers import Hub, call_json, clean_env, cli_argv, run_cli, write_yaml

KEY = "k-logs-1"
OLD = time.time() - 3 * 3600  # files of past hours, quiet for long: final


def line(ip: str, day: str = "2025-12-09", hour: int = 16, extra: str = "") -> str:
    return f"{day} {hour:02d}:{random.randint(0, 59):02d}:01 sinkhole hit from {ip}:4433 {extra}\n"


def write_log(folder: Path, day: str, hour: int, lines: list[str], final: bool = True) -> Path:
    path = folder / f"ramnit_{day}_{hour:02d}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))
    if final:
        os.utime(path, (OLD, OLD))
    return path


def public_ips(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    found: list[str] = []
    while len(found) < n:
        ip = f"{rng.randint(11, 99)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}." \
             f"{rng.randint(1, 254)}"
        if ip not in found:
            found.append(ip)
    return found


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    (tmp_path / "empty").mkdir()
    server = Hub(tmp_path, tmp_path / "empty", logs_ingest={"api_keys": [KEY]}).start()
    yield server
    server.stop()


def config(tmp_path: Path, url: str, **logs: Any) -> Path:
    settings = {"log_dir": str(tmp_path / "sinkhole"), "api_endpoint": f"{url}/api/v1/logs/ips",
                "api_key": KEY, "retry_delay": 0.05, "max_retries": 2, "timeout": 5,
                "stable_seconds": 60, "listing_ttl": 0, **logs}
    return write_yaml(tmp_path / "logs.yaml", {"state_dir": str(tmp_path / "client"),
                                                "logs": settings})


def server_stats(hub: Hub) -> dict[str, Any]:
    status, doc = call_json(hub.url + "/api/v1/logs/stats", headers={"X-API-Key": KEY},
                            timeout=10)
    assert status == 200, doc
    return doc


def once(cfg: Path, expect: int = 0) -> dict[str, Any]:
    result = run_cli(["--json", "logs", "once"], config=cfg, expect=expect)
    return result.json() if expect == 0 else {"err": result.err}


def test_one_pass_over_several_hourly_files(tmp_path: Path, hub: Hub) -> None:
    ips = public_ips(60)
    folder = tmp_path / "sinkhole"
    write_log(folder, "2025-12-09", 15, [line(ip, hour=15) for ip in ips[:30]])
    write_log(folder, "2025-12-09", 16, [line(ip) for ip in ips[30:]] +
              [line(ips[0]), line("10.1.2.3"), line("127.0.0.1"), line("192.168.1.1"),
               line("169.254.1.1"), line("224.0.0.5"), line("240.1.1.1")])
    write_log(folder, "2025-12-10", 0, [f"no timestamp here {ips[1]}\n",
                                       f"no timestamp here {public_ips(61)[-1]}\n"])
    cfg = config(tmp_path, hub.url)
    result = once(cfg)
    assert result["files"] == 3 and result["pending"] == 0
    assert result["uploaded"] == 61
    stats = server_stats(hub)
    assert stats["distinct_ips"] == 61 and stats["total_records"] == 61
    assert once(cfg)["uploaded"] == 0  # nothing new: nothing sent
    db_stats = run_cli(["--json", "logs", "stats"], config=cfg).json()
    totals = db_stats["totals"]
    assert totals["dup_day"] == 1 and totals["dup_global"] == 1  # ips[0] again, ips[1] next day
    assert totals["uploaded"] == 61


def test_growing_file_with_a_partial_last_line(tmp_path: Path, hub: Hub) -> None:
    now = time.localtime()
    day, hour = time.strftime("%Y-%m-%d", now), now.tm_hour
    path = tmp_path / "sinkhole" / f"ramnit_{day}_{hour:02d}.log"
    path.parent.mkdir(parents=True)
    path.write_text(line("8.8.8.8", day, hour) + f"{day} {hour:02d}:00:02 hit from 8.8.4")
    cfg = config(tmp_path, hub.url)
    assert once(cfg)["uploaded"] == 1  # the half-written line waits
    with open(path, "a") as fh:
        fh.write(".4 rest of the line\n")
    assert once(cfg)["uploaded"] == 1
    assert server_stats(hub)["distinct_ips"] == 2  # 8.8.8.8 and 8.8.4.4, not 8.8.4.x


def test_rotation_truncation_and_replacement(tmp_path: Path, hub: Hub) -> None:
    ips = public_ips(9, seed=4)
    folder = tmp_path / "sinkhole"
    path = write_log(folder, "2025-12-09", 16, [line(ip) for ip in ips[:3]])
    cfg = config(tmp_path, hub.url)
    once(cfg)
    path.write_text(line(ips[3]))  # truncated and rewritten, same inode
    os.utime(path, (OLD, OLD))
    result = run_cli(["--json", "logs", "once"], config=cfg)
    assert result.json()["uploaded"] == 1 and "truncated" in result.err
    replacement = folder / "new.tmp"
    replacement.write_text("".join(line(ip) for ip in ips[3:7]))
    os.utime(replacement, (OLD, OLD))
    os.replace(replacement, path)  # logrotate-style: a new inode under the old name
    result = run_cli(["--json", "logs", "once"], config=cfg)
    assert result.json()["uploaded"] == 3 and "replaced" in result.err
    assert server_stats(hub)["distinct_ips"] == 7


# logs.seen_merged:1 follows a kill that left appended seen-set rows: the next pass merges
# them before it reads, and is killed right after
KILLED_AT = ["logs.chunk_committed:1", "logs.chunk_committed:5", "logs.seen_merged:1",
             "logs.batch_claimed:1", "logs.batch_acked:1", "logs.batch_acked:4",
             "logs.batch_deleted:2"]


def test_kill_9_at_each_point_loses_nothing(tmp_path: Path, hub: Hub) -> None:
    """Each run finds a new hourly file and dies at the next named point; nothing is lost and
    a batch sent again after a kill (acknowledged, not yet deleted) is stored once."""
    ips = public_ips(400 * len(KILLED_AT), seed=9)
    folder = tmp_path / "sinkhole"
    cfg = config(tmp_path, hub.url, batch_size=20, chunk_bytes=4096)
    for n, point in enumerate(KILLED_AT):
        part = ips[n * 400:(n + 1) * 400]
        write_log(folder, "2025-12-09", n, [line(ip, hour=n) for ip in part])
        killed_at(point, ["logs", "once"], config=cfg)
    once(cfg)
    stats = server_stats(hub)
    assert stats["distinct_ips"] == len(ips)
    assert stats["total_records"] == len(ips)  # a batch re-sent after a kill was stored once


def test_server_down_queue_grows_then_everything_arrives(tmp_path: Path, hub: Hub) -> None:
    ips = public_ips(80, seed=7)
    folder = tmp_path / "sinkhole"
    write_log(folder, "2025-12-09", 10, [line(ip, hour=10) for ip in ips[:20]])
    cfg = config(tmp_path, hub.url, health_pending_warning=10, health_pending_severe=50)
    hub.stop()
    down = once(cfg, expect=75)
    assert "unreachable" in down["err"] and "stay queued" in down["err"]
    assert run_cli(["logs", "status"], config=cfg, expect=1).out.startswith("health: warning")
    write_log(folder, "2025-12-09", 11, [line(ip, hour=11) for ip in ips[20:]])
    once(cfg, expect=75)
    status = run_cli(["--json", "logs", "status"], config=cfg, expect=2).json()
    assert status["health"] == "severe" and status["pending"] == 80
    hub.start()  # back, on a new port
    cfg = config(tmp_path, hub.url, health_pending_warning=10, health_pending_severe=50)
    assert once(cfg)["uploaded"] == 80
    assert run_cli(["--json", "logs", "status"], config=cfg).json()["health"] == "healthy"
    assert server_stats(hub)["total_records"] == 80


def test_wrong_key_and_refused_source_stop_at_once(tmp_path: Path, hub: Hub) -> None:
    write_log(tmp_path / "sinkhole", "2025-12-09", 10, [line("8.8.8.8", hour=10)])
    cfg = config(tmp_path, hub.url, api_key="wrong", retry_delay=30, max_retries=3)
    started = time.monotonic()
    refused = once(cfg, expect=2)
    assert time.monotonic() - started < 10  # no retry spin
    assert "refused the API key (HTTP 401)" in refused["err"] and "wrong" not in refused["err"]
    assert run_cli(["logs", "test"], config=cfg, expect=2).err
    (tmp_path / "b").mkdir()
    strict = Hub(tmp_path / "b", tmp_path / "empty",
                 logs_ingest={"api_keys": [KEY], "allowed_networks": ["10.0.0.0/8"]}).start()
    try:
        cfg2 = config(tmp_path, strict.url)
        assert "refused this source address" in once(cfg2, expect=2)["err"]
    finally:
        strict.stop()
    ok = run_cli(["--json", "logs", "test"], config=config(tmp_path, hub.url)).json()
    assert ok["endpoint"] == "ok" and ok["sample_ips"] == ["91.198.2.1"]


@pytest.mark.parametrize(("mode", "records"), [("global", 2), ("daily", 4), ("none", 5)])
def test_dedupe_modes(tmp_path: Path, hub: Hub, mode: str, records: int) -> None:
    folder = tmp_path / "sinkhole"
    write_log(folder, "2025-12-09", 10, [line("8.8.8.8", hour=10), line("8.8.8.8", hour=10),
                                        line("9.9.9.9", hour=10)])
    write_log(folder, "2025-12-10", 10, [line("8.8.8.8", "2025-12-10", 10),
                                        line("9.9.9.9", "2025-12-10", 10)])
    cfg = config(tmp_path, hub.url, dedupe=mode)
    assert once(cfg)["uploaded"] == records
    assert server_stats(hub)["total_records"] == records


@pytest.mark.parametrize("mode", ["global", "daily"])
def test_dedupe_is_exact_whatever_the_memory_holds(tmp_path: Path, hub: Hub, mode: str) -> None:
    """The in-memory part of the seen-set is a cache: with room for 1, 3 or every token,
    across passes and days, the same records are queued and the same duplicates counted."""
    ips = public_ips(12, seed=5)
    rng = random.Random(9)
    folder = tmp_path / "sinkhole"
    for day, hour in (("2025-12-09", 10), ("2025-12-09", 11), ("2025-12-10", 0)):
        write_log(folder, day, hour, [line(rng.choice(ips), day, hour) for _ in range(200)] +
                  [line(ips[0], day, hour)])
    outcomes = []
    for memory in (1, 3, 1000):
        base = tmp_path / f"m{memory}"
        (base / "sinkhole").parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder, base / "sinkhole")
        cfg = config(base, hub.url, dedupe=mode, max_memory_ips=memory)
        first = once(cfg)
        # a second pass over a new file: memory (or the disk) says what was seen
        write_log(base / "sinkhole", "2025-12-10", 1,
                  [line(ip, "2025-12-10", 1) for ip in ips] + [line("8.8.8.8", "2025-12-10", 1)])
        second = once(cfg)
        totals = run_cli(["--json", "logs", "stats"], config=cfg).json()["totals"]
        outcomes.append((first["uploaded"], second["uploaded"], totals["dup_day"],
                         totals["dup_global"]))
    assert outcomes[0] == outcomes[1] == outcomes[2], outcomes
    expected_first = len(ips) if mode == "global" else 2 * len(ips)
    assert outcomes[0][0] == expected_first
    assert outcomes[0][1] == 1  # only 8.8.8.8 is new on the second pass


def test_ip_regex_anchors_the_search(tmp_path: Path, hub: Hub) -> None:
    folder = tmp_path / "sinkhole"
    write_log(folder, "2025-12-09", 10, [
        "2025-12-09 10:00:01 sinkhole hit from 91.198.2.1:4433 via 8.8.8.8 GET /1.1.1.1\n",
        "2025-12-09 10:00:02 sinkhole hit from 010.001.002.003:1 (private, dropped)\n",
        "2025-12-09 10:00:03 sinkhole hit from 92.198.2.1:4433\n"])
    cfg = config(tmp_path, hub.url, ip_regex="from ([0-9][0-9.]{6,})")
    assert once(cfg)["uploaded"] == 2
    assert sorted(_stored_ips(tmp_path)) == ["91.198.2.1", "92.198.2.1"]
    sample = run_cli(["--json", "logs", "test", "--sample", "x 9.9.9.9 from 7.7.7.7:1"],
                     config=cfg).json()
    assert sample["sample_ips"] == ["7.7.7.7"]
    for bad, why in (("from ([0-9", "not a valid regular expression"),
                     ("(a)(b)", "at most one group")):
        result = run_cli(["logs", "once"], config=config(tmp_path, hub.url, ip_regex=bad),
                         expect=2)
        assert "logs.ip_regex" in result.err and why in result.err


def test_a_text_seen_set_from_an_earlier_release_is_converted(tmp_path: Path, hub: Hub) -> None:
    import sqlite3

    state = tmp_path / "client" / "logs"
    state.mkdir(parents=True)
    with sqlite3.connect(state / "queue.db") as conn:
        conn.execute("CREATE TABLE seen (ip TEXT PRIMARY KEY, last_date TEXT)")
        conn.executemany("INSERT INTO seen VALUES (?, ?)", [("8.8.8.8", "2025-12-09"),
                                                            ("9.9.9.9|2025-12-09", "2025-12-09")])
    write_log(tmp_path / "sinkhole", "2025-12-09", 10,
              [line("8.8.8.8", hour=10), line("7.7.7.7", hour=10)])
    cfg = config(tmp_path, hub.url)
    assert once(cfg)["uploaded"] == 1  # 8.8.8.8 was sent by the earlier release
    assert _stored_ips(tmp_path) == ["7.7.7.7"]
    with sqlite3.connect(state / "queue.db") as conn:
        keys = dict(conn.execute("SELECT key, last_day FROM seen_ip"))
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'seen'").fetchone() \
            is None
    nine = (9 << 24) | (9 << 16) | (9 << 8) | 9
    day = dt.date(2025, 12, 9).toordinal()
    assert keys[(8 << 24) | (8 << 16) | (8 << 8) | 8] == day
    assert keys[(day << 32) | nine] == day  # the daily key kept its day


def test_bad_input_lines(tmp_path: Path, hub: Hub) -> None:
    folder = tmp_path / "sinkhole"
    folder.mkdir()
    path = folder / "ramnit_2025-12-09_10.log"
    with open(path, "wb") as fh:
        fh.write(os.urandom(4096).replace(b"\n", b" ") + b"\n")
        fh.write(line("999.1.1.1").encode() + line("1.2.3").encode() + line("1.2.3.4.5").encode())
        fh.write(b"x" * (10 * 1024 * 1024))  # a 10 MB line without a newline
        fh.write(b" 7.7.7.7 inside the long line\n")
        fh.write(line("008.008.004.004").encode())  # leading zeros: 8.8.4.4
        fh.write("2025-12-09 10:00:00 中文 \xff from 9.9.9.9\n".encode("utf-8", "surrogateescape"))
    os.utime(path, (OLD, OLD))
    cfg = config(tmp_path, hub.url, chunk_bytes=65536, max_line_bytes=65536)
    result = run_cli(["--json", "logs", "once"], config=cfg)
    assert "longer than 65536 bytes was skipped" in result.err
    assert set(_stored_ips(tmp_path)) == {"8.8.4.4", "9.9.9.9"}
    assert result.json()["uploaded"] == 2


def _stored_ips(tmp_path: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(tmp_path / "hubstate" / "logs" / "ingest.db") as conn:
        return [ip for (ip,) in conn.execute("SELECT ip FROM ip_records")]


def _peak_rss_kb(cfg: Path) -> int:
    argv = ["/usr/bin/time", "-f", "%M"] + cli_argv() + ["--config", str(cfg), "logs", "once"]
    proc = subprocess.run(argv, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return int(proc.stderr.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/usr/bin/time").exists(), reason="needs /usr/bin/time")
def test_logs_test_checks_ip_regex_against_the_newest_log(tmp_path: Path, hub: Hub) -> None:
    folder = tmp_path / "sinkhole"
    ips = public_ips(40, seed=13)
    write_log(folder, "2025-12-09", 9, [line("7.7.7.7", hour=9)])
    newest = write_log(folder, "2025-12-09", 10, [line(ip, hour=10) for ip in ips])
    os.utime(newest)  # the newest file is the one looked at
    plain = run_cli(["--json", "logs", "test"], config=config(tmp_path, hub.url)).json()
    assert plain["log_file"] == str(newest)
    assert plain["ip_regex_check"] == {"addresses": 40,
                                       "suggested_ip_regex": "from ([0-9][0-9.]{6,})"}
    text = run_cli(["logs", "test"], config=config(tmp_path, hub.url)).out
    assert "hint:" in text and "'from ([0-9][0-9.]{6,})'" in text
    # the suggestion finds them all; a line of another format would be missed by it
    anchored = config(tmp_path, hub.url, ip_regex="from ([0-9][0-9.]{6,})")
    assert run_cli(["--json", "logs", "test"], config=anchored).json()["ip_regex_check"] == {
        "addresses": 40, "missed": 0, "examples": []}
    with open(newest, "a") as fh:
        fh.write("2025-12-09 10:59:59 relay src=8.8.4.4 port 25\n")
    check = run_cli(["--json", "logs", "test"], config=anchored).json()["ip_regex_check"]
    assert check == {"addresses": 41, "missed": 1, "examples": ["8.8.4.4"]}
    assert "warning: logs.ip_regex misses 1 of the 41" in run_cli(
        ["logs", "test"], config=anchored).out
    # and no hint without the generic pattern's agreement on every address
    assert "suggested_ip_regex" not in run_cli(
        ["--json", "logs", "test"], config=config(tmp_path, hub.url)).json()["ip_regex_check"]


def test_memory_does_not_grow_with_the_file(tmp_path: Path, hub: Hub) -> None:
    ips = public_ips(2000, seed=11)
    rng = random.Random(3)
    sizes = {}
    for label, lines in (("small", 20_000), ("large", 800_000)):
        base = tmp_path / label
        text = "".join(line(rng.choice(ips)) for _ in range(lines))
        write_log(base / "sinkhole", "2025-12-09", 16, [text])
        sizes[label] = _peak_rss_kb(config(base, hub.url, chunk_bytes=1 << 20))
    # ~1.5 MB vs ~60 MB of log: the peak must not follow the file size (the margin is for
    # the allocator: with the upload thread, glibc keeps a second arena)
    assert sizes["large"] < sizes["small"] + 16 * 1024, sizes


def test_delivery_into_postgresql(tmp_path: Path, pg_url: str) -> None:
    import psycopg

    def drop() -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS ip_records, ingest_batches")

    drop()
    (tmp_path / "empty").mkdir()
    server = Hub(tmp_path, tmp_path / "empty",
                 logs_ingest={"api_keys": [KEY], "store_url": pg_url}).start()
    try:
        ips = public_ips(700, seed=21)
        write_log(tmp_path / "sinkhole", "2025-12-09", 10, [line(ip, hour=10) for ip in ips])
        assert once(config(tmp_path, server.url))["uploaded"] == 700
        with psycopg.connect(pg_url) as conn:
            stored = {str(ip) for (ip,) in conn.execute("SELECT ip FROM ip_records")}
        assert stored == set(ips)
    finally:
        server.stop()
        drop()


def test_run_loop_notifies_systemd(tmp_path: Path, hub: Hub) -> None:
    import socket

    write_log(tmp_path / "sinkhole", "2025-12-09", 10, [line("8.8.8.8", hour=10)])
    cfg = config(tmp_path, hub.url, upload_interval=0.2, min_upload_batch=1)
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(20)
        proc = subprocess.Popen(cli_argv() + ["--config", str(cfg), "logs", "run"],
                                env=clean_env({"NOTIFY_SOCKET": address}),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            messages = [sock.recv(4096).decode() for _ in range(5)]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    assert messages[0] == "READY=1"
    assert "WATCHDOG=1" in messages
    assert server_stats(hub)["total_records"] == 1


def test_status_is_healthy_with_millions_of_addresses_already_sent(tmp_path: Path,
                                                                    hub: Hub) -> None:
    """The seen-set grows with every address ever sent; it is not "queue size"."""
    from datahubsync.logs.service import open_queue
    from datahubsync.schema import load_config

    cfg = config(tmp_path, hub.url)
    write_log(tmp_path / "sinkhole", "2025-12-09", 10, [line("8.8.8.8", hour=10)])
    assert once(cfg)["uploaded"] == 1
    with open_queue(load_config(cfg, environ={})) as queue:  # 3 million sent before
        queue.db.execute("BEGIN")
        queue.db.executemany("INSERT OR IGNORE INTO seen_ip (key, last_day) VALUES (?, 1)",
                             ((k,) for k in range(1, 3_000_001)))
        queue.db.execute("COMMIT")
    assert (tmp_path / "client" / "logs" / "queue.db").stat().st_size > 10e6  # old: warning
    status = run_cli(["--json", "logs", "status"], config=cfg).json()
    assert status["health"] == "healthy" and status["pending"] == 0
    assert status["pending_bytes"] == 0 and status["cached_ips"] >= 3_000_000
    assert status["queue_file_bytes"] > 10e6  # shown, but not what health is judged by


def test_upload_errors_in_a_row_then_logs_queue_and_purge(tmp_path: Path, hub: Hub) -> None:
    folder = tmp_path / "sinkhole"
    write_log(folder, "2025-12-09", 10, [line(ip, hour=10) for ip in public_ips(30, seed=11)])
    cfg = config(tmp_path, hub.url)
    hub.stop()
    for n in range(1, 5):
        once(cfg, expect=75)
        status = run_cli(["--json", "logs", "status"], config=cfg, expect=None).json()
        assert status["upload_errors"] == n
        assert status["health"] == ("warning" if n <= 3 else "severe"), status
    assert run_cli(["--json", "logs", "stats"], config=cfg).json()["totals"][
        "upload_failures"] == 4
    shown = run_cli(["--json", "logs", "queue"], config=cfg).json()
    assert shown["pending"] == 30 and shown["oldest"]["ip"]
    refused = run_cli(["logs", "queue", "--purge"], config=cfg, expect=1)  # no terminal: no
    assert "Aborted" in refused.err
    purged = run_cli(["--json", "logs", "queue", "--purge", "--yes"], config=cfg).json()
    assert purged["purged"] == 30
    assert run_cli(["--json", "logs", "queue"], config=cfg).json()["pending"] == 0
