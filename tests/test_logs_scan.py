"""The token filter and the scanning workers: the same records as a plain scan, whatever
the memory holds, however many workers, and when a worker or the reader dies."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from datahubsync.logs import scan as scan_module
from datahubsync.logs.parser import TOKEN_RE, public_ip_value
from datahubsync.logs.queue import LogQueue
from datahubsync.logs.reader import ReadSettings, new_tokens, read_file
from datahubsync.logs.scan import (
    ChildScanner,
    InlineScanner,
    Piece,
    Scanner,
    TokenFilter,
    open_scanner,
)
from tests.helpers import Hub, clean_env, cli_argv, wait_until, write_yaml

SPELLINGS = ["8.8.8.8", "008.8.8.8", "9.9.9.9", "10.1.2.3", "192.168.0.1", "999.1.1.1",
             "1.2.3", "203.0.113.7", "1.1.1.1", "01.1.1.1", "80.80.80.80"]


def chunk_of(rng: random.Random, lines: int, tokens: list[str]) -> bytes:
    return b"".join(f"2025-12-09 10:00:{rng.randint(0, 59):02d} hit from {rng.choice(tokens)}"
                    f":4433 GET /{rng.randint(0, 9999)}.php HTTP/1.1\n".encode()
                    for _ in range(lines))


def plain(chunk: bytes) -> list[tuple[bytes, int]]:
    """(token, offset) of every match, the way the reader used to walk them."""
    return [(m[0], m.start()) for m in TOKEN_RE.finditer(chunk)]


@pytest.mark.parametrize("limit", [0, 1, 4, 100_000])
def test_filter_counts_every_match_and_passes_each_address_on_once_a_day(limit: int) -> None:
    rng = random.Random(limit)
    tokens = SPELLINGS + [f"{rng.randint(11, 99)}.{rng.randint(0, 255)}.1.{n}" for n in range(40)]
    flt = TokenFilter(TOKEN_RE, "global", limit)
    passed: dict[int, set[bytes]] = {}
    widest = 0  # the most distinct tokens in a chunk so far
    for n in range(30):
        day = 1 if n < 20 else 2
        chunk = chunk_of(rng, rng.randint(1, 60), tokens)
        scan = flt.scan(chunk, day)
        matches = plain(chunk)
        public = [t for t, _ in matches if public_ip_value(t)]
        # every occurrence is counted once: known, dropped or one of the new tokens'
        assert scan.dropped == len(matches) - len(public)
        assert scan.known + sum(scan.counts) == len(public)
        assert scan.lines == chunk.count(b"\n")
        # new tokens come in order of first occurrence, with that offset and their address
        firsts = {}
        for token, at in matches:
            firsts.setdefault(token, at)
        assert scan.firsts == sorted(scan.firsts)
        for token, count, at, ip in zip(scan.tokens, scan.counts, scan.firsts, scan.ips,
                                        strict=True):
            assert firsts[token] == at and chunk[at:at + len(token)] == token
            assert count == sum(1 for t, _ in matches if t == token)
            assert ip == public_ip_value(token)
        today = passed.setdefault(day, set())
        if limit >= len(tokens):  # room for all: a token is new once a day, never again
            assert not today & set(scan.tokens)
            assert set(public) - today == set(scan.tokens)
        else:  # forgetting only makes a token new again (the seen-set on disk decides)
            assert set(public) - today <= set(scan.tokens)
        today.update(scan.tokens)
        # bounded: the limit, plus what one rotation may carry (a chunk's tokens each side)
        widest = max(widest, len({t for t, _ in matches}))
        assert len(flt) <= limit + 2 * widest


@pytest.mark.parametrize("pattern", [TOKEN_RE, re.compile(rb"from ([0-9][0-9.]{6,})")])
def test_a_new_token_is_located_at_its_first_match_not_inside_a_longer_run(
        pattern: re.Pattern[bytes]) -> None:
    flt = TokenFilter(pattern, "global", 1000)
    flt.scan(b"x from 9.9.9.9:1\n", 1)
    chunk = (b"a from 11.1.1.1:5 and 1.1.1.10 and 21.1.1.1.7\n"  # 1.1.1.1 inside runs
             b"b 1.1.1.1 without the anchor\n"
             b"c from 1.1.1.1:80\n")
    scan = flt.scan(chunk, 1)
    firsts: dict[bytes, int] = {}
    for m in pattern.finditer(chunk):
        if public_ip_value(m[pattern.groups]):
            firsts.setdefault(m[pattern.groups], m.start(pattern.groups))
    assert dict(zip(scan.tokens, scan.firsts, strict=True)) == firsts
    real = chunk.index(b"b 1.1.1.1") + 2 if pattern is TOKEN_RE else chunk.rindex(b"1.1.1.1")
    assert firsts[b"1.1.1.1"] == real


@pytest.mark.parametrize("distinct", [3, 40, 2000])
def test_first_matches_are_exact_across_segments_with_few_or_many_new_tokens(
        distinct: int) -> None:
    """Chunks of many 16 KiB segments: each new token's offset is its first match, whether
    a segment holds a few new tokens (found by find) or many (its Match objects)."""
    rng = random.Random(distinct)
    runs = ["1.1.1.1", "01.1.1.1", "1.1.1.10"]  # runs holding other tokens
    flt = TokenFilter(TOKEN_RE, "global", 100_000)
    passed: set[bytes] = set()
    for k in range(3):  # each chunk brings ``distinct`` new tokens
        tokens = runs + [f"{rng.randint(11, 99)}.{k}.9.{n}" for n in range(distinct)]
        chunk = chunk_of(rng, 3000, tokens)
        assert len(chunk) > 8 * 16 * 1024
        scan = flt.scan(chunk, 1)
        firsts: dict[bytes, int] = {}
        for token, at in plain(chunk):
            if public_ip_value(token):
                firsts.setdefault(token, at)
        expected = {t: at for t, at in firsts.items() if t not in passed}
        assert expected, "each chunk should bring new tokens"
        assert dict(zip(scan.tokens, scan.firsts, strict=True)) == expected
        passed.update(expected)
        assert scan.firsts == sorted(scan.firsts)


@pytest.mark.parametrize("seed", range(4))
def test_the_generic_patterns_runs_split_out_are_its_findall(seed: int) -> None:
    """The generic pattern's matches are taken by splitting the segment at every byte that
    is neither a digit nor a dot: the same tokens in the same order as ``findall``, with
    runs led by dots, runs just too short, every kind of blank and bytes above 127."""
    rng = random.Random(seed)
    alphabet = b"0123456789" * 3 + b"." * 8 + b" \t\r\n\x0b\x0c:-/x\x85\xa0\xff"
    for _ in range(300):
        segment = bytes(rng.choices(alphabet, k=rng.randint(0, 300)))
        blank = segment.translate(scan_module.BLANK_BUT_RUNS)
        assert scan_module._run_matches(blank) == TOKEN_RE.findall(segment), segment


@pytest.mark.parametrize("seed", range(6))
def test_the_generic_patterns_walk_locates_what_the_match_objects_locate(seed: int) -> None:
    """The generic pattern's tokens are split out and located without running the pattern
    (runs of digits and dots: leading dots, runs holding other tokens, runs at the chunk's
    edges): the same Scan as ``findall`` and the Match objects give, segment by segment,
    few or many new."""
    rng = random.Random(seed)
    alphabet = "0123456789" * 3 + "." * 6 + "x :\t-"
    pieces = ["1.1.1.1", "01.1.1.1", "..8.8.8.8", "9.9.9.9.", "11.1.1.10", "4.4.4.4",
              "5.1.1.1.1", "6..1.1.1.1"]
    walked, matched = TokenFilter(TOKEN_RE, "global", 10_000), TokenFilter(TOKEN_RE, "global",
                                                                           10_000)
    matched.runs = False
    for _ in range(8):  # a few new tokens a segment (found one by one) or many (walked)
        lines, longest = [], rng.choice([6, 18])
        for _ in range(rng.choice([5, 400, 2000])):
            words = [rng.choice(pieces) if rng.random() < 0.4 else
                     "".join(rng.choices(alphabet, k=rng.randint(1, longest)))
                     for _ in range(rng.randint(1, 6))]
            lines.append(rng.choice(["", " ", "."]).join(words))
        chunk = ("\n".join(lines) + rng.choice(["", "\n"])).encode()
        assert walked.scan(chunk, 1) == matched.scan(chunk, 1)


def test_a_match_spanning_lines_is_located_by_the_segments_match_objects() -> None:
    """``find`` and a check of the token's own line cannot see a match that starts on the
    line before: such a token is located from its segment's Match objects."""
    pattern = re.compile(rb"via\n([0-9][0-9.]{6,})")
    flt = TokenFilter(pattern, "global", 1000)
    chunk = b"x 8.8.8.8 alone\nvia\n8.8.8.8 here\n"
    scan = flt.scan(chunk, 1)
    assert scan.tokens == [b"8.8.8.8"] and scan.firsts == [chunk.index(b"via\n") + 4]


def test_dedupe_none_passes_every_public_token_of_every_chunk() -> None:
    rng = random.Random(3)
    flt = TokenFilter(TOKEN_RE, "none", 3)
    for _ in range(5):
        chunk = chunk_of(rng, 40, SPELLINGS)
        scan = flt.scan(chunk, 1)
        public = [t for t, _ in plain(chunk) if public_ip_value(t)]
        assert scan.known == 0 and sum(scan.counts) == len(public)
        assert set(scan.tokens) == set(public)


def _settings(**extra: object) -> ReadSettings:
    values: dict[str, object] = {
        "botnet_type": "ramnit", "dedupe": "global", "timestamp_source": "line",
        "prefix_chars": 60, "chunk_bytes": 4096, "max_line_bytes": 65536,
        "stable_seconds": 0, "max_memory_ips": 50}
    values.update(extra)
    return ReadSettings(**values)  # type: ignore[arg-type]


def _logs(folder: Path) -> list[Path]:
    rng = random.Random(11)
    tokens = SPELLINGS + [f"{rng.randint(11, 99)}.{rng.randint(0, 255)}.7.{n}" for n in range(300)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for day, hour in (("2025-12-09", 10), ("2025-12-09", 11), ("2025-12-10", 0)):
        path = folder / f"ramnit_{day}_{hour:02d}.log"
        path.write_bytes(chunk_of(rng, 3000, tokens))
        paths.append(path)
    return paths


def _read_all(paths: list[Path], state: Path, cfg: ReadSettings, scanner: Scanner,
              after_chunk: object = None) -> tuple[list[str], dict[str, dict[str, int]]]:
    queue = LogQueue(state / "queue.db")
    try:
        for path in paths:
            read_file(path, queue, cfg, time.time() + 86400 * 3650, after_chunk, scanner)  # type: ignore[arg-type]
        batch = queue.next_batch(10**9)
        return (batch.texts if batch else []), queue.counters()
    finally:
        scanner.close()
        queue.close()


@pytest.mark.parametrize("dedupe", ["global", "daily", "none"])
def test_workers_queue_exactly_what_inline_scanning_queues(tmp_path: Path, dedupe: str) -> None:
    paths = _logs(tmp_path / "logs")
    cfg = _settings(dedupe=dedupe)
    inline = _read_all(paths, tmp_path / "inline", cfg, InlineScanner(new_tokens(cfg)))
    two = _read_all(paths, tmp_path / "two", cfg, ChildScanner(new_tokens(cfg), 2))
    assert inline[0], "the logs must yield records"
    assert two == inline  # the same records in the same order, the same counters


def test_a_span_rewritten_under_the_worker_is_scanned_from_the_readers_bytes(
        tmp_path: Path) -> None:
    """Workers read their span from the file itself; if the bytes there are no longer
    the ones the reader read (the file was rewritten in between), the reader's bytes
    are scanned, never the worker's."""
    rng = random.Random(8)
    read = chunk_of(rng, 300, [f"{rng.randint(11, 99)}.1.2.{n}" for n in range(40)])
    now = read.replace(b".1.2.", b".3.4.")  # the same length, other addresses
    assert len(now) == len(read) and now != read
    log_file = tmp_path / "a.log"
    log_file.write_bytes(now)
    scanner = ChildScanner(new_tokens(_settings()), 2)
    try:
        with open(log_file, "rb") as fh:
            (_, scan), = scanner.scans(iter([Piece(read, len(read), 0)]), 20431, fh.fileno())
    finally:
        scanner.close()
    expected = new_tokens(_settings()).scan(read, 20431)
    assert scan.tokens and scan == expected


def test_a_dead_worker_is_replaced_by_scanning_in_the_reader(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = _logs(tmp_path / "logs")
    cfg = _settings()
    expected = _read_all(paths, tmp_path / "inline", cfg, InlineScanner(new_tokens(cfg)))
    scanner = ChildScanner(new_tokens(cfg), 2)
    victim = scanner._workers[1].proc.pid
    chunks = []

    def after_chunk() -> None:
        chunks.append(1)
        if len(chunks) == 5:
            os.kill(victim, signal.SIGKILL)

    with caplog.at_level(logging.WARNING, logger="datahubsync.logs.scan"):
        got = _read_all(paths, tmp_path / "two", cfg, scanner, after_chunk)
    assert got == expected
    assert f"scanning process {victim} is gone" in caplog.text


def test_a_ctrl_c_inside_a_receive_gives_the_stream_up_instead_of_waiting_on_it(
        tmp_path: Path) -> None:
    """A KeyboardInterrupt that lands after a result's bytes were read (or half of them)
    leaves the socket out of step: receiving from it again would wait forever for an
    answer the worker never sends. The scanner gives that worker up and stops at once."""
    import threading

    rng = random.Random(5)
    tokens = [f"{rng.randint(11, 99)}.1.2.{n}" for n in range(50)]
    scanner = ChildScanner(new_tokens(_settings()), 2)
    interrupted = scanner._workers[0]
    real_recv = interrupted.conn.recv_bytes

    def recv_then_interrupt() -> bytes:
        real_recv()  # the result is consumed, then Ctrl-C
        raise KeyboardInterrupt

    interrupted.conn.recv_bytes = recv_then_interrupt  # type: ignore[method-assign]
    first, second = chunk_of(rng, 200, tokens), chunk_of(rng, 200, tokens)
    log_file = tmp_path / "a.log"
    log_file.write_bytes(first + second)
    pieces = iter([Piece(first, len(first), 0), Piece(second, len(second), len(first))])
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            with open(log_file, "rb") as fh:
                list(scanner.scans(pieces, 20431, fh.fileno()))
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(lambda: not thread.is_alive(), "the scan to stop after the Ctrl-C",
               timeout=60, fail=False)
    assert not thread.is_alive(), "the scanner waited on a stream that was out of step"
    assert len(outcome) == 1 and isinstance(outcome[0], KeyboardInterrupt)
    scanner.close()
    assert not [w.proc.pid for w in scanner._workers if _alive(w.proc.pid)]


def test_no_fork_means_scanning_in_the_reader(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """fork refused (a process limit, no memory) for the second worker: the first is
    stopped and the pass scans in its own process. Simulated: root ignores RLIMIT_NPROC."""
    import multiprocessing.context

    started: list[int] = []
    real_start = multiprocessing.context.ForkProcess.start

    def start(self: multiprocessing.context.ForkProcess) -> None:
        if started:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        real_start(self)
        started.append(self.pid or 0)

    monkeypatch.setattr(multiprocessing.context.ForkProcess, "start", start)
    with caplog.at_level(logging.WARNING, logger="datahubsync.logs.scan"):
        scanner = open_scanner(new_tokens(_settings()), 2)
    assert isinstance(scanner, InlineScanner)
    assert "could not start the scanning processes" in caplog.text
    assert started and not _alive(started[0])


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.fixture
def pass_under_way(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, list[int]]]:
    """A `logs once` with two scanning workers, mid-pass over 3 x 9 MB of logs (in its
    own session, so a signal can reach its whole group): (process, reader, workers)."""
    (tmp_path / "empty").mkdir()
    hub = Hub(tmp_path, tmp_path / "empty", logs_ingest={"api_keys": ["k"]}).start()
    proc = None
    try:
        rng = random.Random(2)
        tokens = [f"{rng.randint(11, 99)}.{rng.randint(0, 255)}.{n % 250}.{n // 250 + 1}"
                  for n in range(20000)]
        folder = tmp_path / "sinkhole"
        folder.mkdir()
        for hour in range(3):
            (folder / f"ramnit_2025-12-09_{hour:02d}.log").write_bytes(
                chunk_of(rng, 150_000, tokens))
        cfg = write_yaml(tmp_path / "logs.yaml", {"state_dir": str(tmp_path / "client"), "logs": {
            "log_dir": str(folder), "api_endpoint": f"{hub.url}/api/v1/logs/ips",
            "api_key": "k", "stable_seconds": 0, "scan_processes": 2}})
        proc = subprocess.Popen(cli_argv() + ["--config", str(cfg), "logs", "once"],
                                env=clean_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        found: tuple[int, list[int]] = (proc.pid, [])

        def scanning() -> bool:
            nonlocal found
            if proc.poll() is not None:
                return True  # ended: the assertion below says so
            found = _reader_and_workers(proc.pid)
            return len(found[1]) >= 2

        wait_until(scanning, "two scanning processes", timeout=30, interval=0.02, fail=False)
        reader, workers = found
        assert len(workers) == 2, "the pass should have started two scanning processes"
        queue_db = tmp_path / "client" / "logs" / "queue.db"

        def a_chunk_committed() -> bool:  # mid-pass: the first chunk's offset is on disk
            if proc.poll() is not None or not queue_db.exists():
                return proc.poll() is not None
            with contextlib.closing(sqlite3.connect(queue_db, timeout=30)) as db:
                try:
                    return bool(db.execute("SELECT 1 FROM files WHERE offset > 0").fetchone())
                except sqlite3.OperationalError:  # the schema is being created
                    return False

        wait_until(a_chunk_committed, "a first chunk committed", timeout=60, interval=0.02,
                   fail=False)
        assert proc.poll() is None, "the pass ended before it could be interrupted"
        yield proc, reader, workers
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
        hub.stop()


def test_workers_exit_when_the_reader_is_killed(
        pass_under_way: tuple[subprocess.Popen[bytes], int, list[int]]) -> None:
    proc, reader, workers = pass_under_way
    os.kill(reader, signal.SIGKILL)
    proc.communicate(timeout=30)
    alive = workers

    def gone() -> bool:
        nonlocal alive
        alive = [pid for pid in workers if _alive(pid)]
        return not alive

    wait_until(gone, "the scanning processes to exit", timeout=10, fail=False)
    assert not alive, f"scanning processes {alive} outlived the reader"


def test_ctrl_c_stops_the_pass_cleanly(
        pass_under_way: tuple[subprocess.Popen[bytes], int, list[int]]) -> None:
    """SIGINT to the whole process group (a terminal's Ctrl-C): exit 130, one message,
    no traceback from the scanning workers, and no worker left behind."""
    proc, _, workers = pass_under_way
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err, err[-2000:]
    assert not [pid for pid in workers if _alive(pid)]


def _reader_and_workers(pid: int) -> tuple[int, list[int]]:
    """The process running the pass and its children: the CLI's own process, or with
    the one-file frozen binary, the Python process its bootloader starts."""
    children = _children(pid)
    if len(children) == 1 and _children(children[0]):
        return children[0], _children(children[0])
    return pid, children


def _alive(pid: int) -> bool:
    """Running and not a zombie (a reparented zombie is reaped by init, eventually)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


READ_ALL_IN_A_CHILD = r"""
import sys, time
from pathlib import Path
from datahubsync.logs import scan as scan_module
from datahubsync.logs.queue import LogQueue
from datahubsync.logs.reader import ReadSettings, new_tokens, read_file
from datahubsync.logs.scan import ChildScanner
cfg = ReadSettings(botnet_type="ramnit", dedupe="global", timestamp_source="line",
                   prefix_chars=60, chunk_bytes=1 << 20, max_line_bytes=65536,
                   stable_seconds=0, max_memory_ips=1_000_000)
queue = LogQueue(Path(sys.argv[2]))
scanner = ChildScanner(new_tokens(cfg), 2)
try:
    read_file(Path(sys.argv[1]), queue, cfg, time.time() + 86400 * 3650, None, scanner)
finally:
    scanner.close()
print(queue.depth())
"""


def test_large_results_both_ways_never_block_reader_and_worker_on_each_other(
        tmp_path: Path) -> None:
    """1 MiB chunks of addresses all new: a worker's result and the tokens sent to it
    with its next span are each larger than a socket buffer. Were both sides to write
    at once, each would wait for the other to read: the pass would never end. It runs
    in a child (a generous bound, then killed) so that such a hang fails the test."""
    log_file = tmp_path / "ramnit_2025-12-09_10.log"
    lines: list[bytes] = []
    size = n = 0
    while size < 10 * (1 << 20):
        n += 1
        ip = f"{11 + n // 65536 % 200}.{n // 256 % 256}.{n % 256}.{1 + n % 250}"
        lines.append(f"2025-12-09 10:00:00 hit from {ip}:80\n".encode())
        size += len(lines[-1])
    log_file.write_bytes(b"".join(lines))
    expected = {public_ip_value(line.split(b" from ")[1].split(b":")[0]) for line in lines}
    expected.discard(0)  # not public
    child = subprocess.run(
        [sys.executable, "-c", READ_ALL_IN_A_CHILD, str(log_file), str(tmp_path / "q.db")],
        capture_output=True, text=True, timeout=300, env=clean_env(), cwd=Path.cwd())
    assert child.returncode == 0, child.stderr
    assert int(child.stdout.split()[-1]) == len(expected)
