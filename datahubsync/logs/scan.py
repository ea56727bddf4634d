"""Finding and sorting out the address tokens of a chunk, here or in worker processes.

The regex scan and the per-token memory lookups are what a pass costs in
steady state: Python's ``re`` reads ~60-140 MiB/s of these lines, and a
lookup in a memory of 300 000 tokens costs ~0.3-0.8 µs in cache misses,
per distinct token per chunk. Both run in ``TokenFilter``, which sends on
only what the reader must decide: tokens with a public address that it
has not passed on today (or, dedupe ``none``, every public token), with
their counts and the offset of their first match. The reader then does per
new address what it did before (the seen-set on disk, the record, the
commit). The scan is ``findall`` per 16 KiB of whole lines (a Match object
per match would cost a quarter of it), or for the generic pattern a split of
the segment at every byte that is not a digit or a dot; a new token's offset
is then found in the first segment that holds it (``TokenFilter._locate``).

``ChildScanner`` runs filters in workers forked before the pass starts its
upload thread (``logs.scan_processes``, one per CPU by default), chunks
going to them in turn. The chunk's bytes do not travel: each worker holds
the file itself (its descriptor, passed over the socket once per file) and
reads the span with ``pread``; the reader sends the span, the day and a
CRC-32 of the bytes it read, and a worker whose bytes differ (the file was
rewritten in between) answers "not mine", so the reader scans that chunk.
Each worker has up to DEPTH spans in hand, so it starts the next one while
the reader commits. Both directions can carry more than a socket buffer
holds (a span's result; the tokens other workers passed on, sent with a
span), so a worker writes its results from a thread of its own and always
goes on reading: the reader's write never waits for a worker that waits for
the reader to read (each side blocked writing to the other: with 4 MiB
chunks of new addresses, a pass that never ended). The reader reads results
in order, and it has at most DEPTH + 1 spans out per worker. If
a worker dies, the reader scans its chunks itself, with a fresh filter, and
says so in the log; if the reader dies (kill -9), the workers read EOF, or
fail writing, and exit.

A filter marks a token as passed on when it sends it: the reader commits
chunks in order, so by the time a later chunk is counted the token's
record or seen-set row is in the same database; if a commit fails the
pass ends, and the workers with it. Each worker's filter is its own; the
tokens one worker passed on are sent to the others with their next span
(after the reader committed them), so a token is new to a second worker
only in the spans it already had in hand. There the seen-set on disk says
it was seen today, and the counts come out the same as with one filter.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import queue
import re
import signal
import struct
import threading
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from multiprocessing.reduction import recv_handle, send_handle
from typing import Any, NamedTuple, Protocol

from datahubsync.core.cpus import usable_cpus
from datahubsync.logs.cache import TwoGenerations
from datahubsync.logs.parser import TOKEN_RE, line_around, line_bounds, public_ip_value
from datahubsync.logs.records import RecordFormat

try:  # ~20x zlib's speed: a chunk's check costs microseconds
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover - zlib-ng is a dependency; zlib does the same
    from zlib import crc32

log = logging.getLogger(__name__)
# A request: kind, day number, offset, length, CRC-32 of the span's bytes. NEW_FILE is
# followed by the file's descriptor (SCM_RIGHTS); SPAN asks for that file's span.
REQUEST = struct.Struct("<BqQQI")
SPAN, NEW_FILE = 0, 1
NOT_MINE = b""  # the worker's bytes were not the reader's
MAX_AUTO_WORKERS = 4
DEPTH = 2  # spans a worker has in hand: it starts the next while the reader commits
SEGMENT = 16 * 1024  # bytes of whole lines per findall: where a new token is searched
# A segment's new tokens located by bytes.find and a check of their line (~5 µs each)
# up to this many, beyond it by the segment's Match objects (~0.1 ms)
FIND_AT_MOST = 16
# The generic pattern's new tokens: by bytes.find and a look at the bytes around (~3 µs
# each, most of it the find) up to this many, beyond it by a walk of the segment's
# matches in order (~0.3 µs a match)
FIND_RUNS_AT_MOST = 3
RUN_BYTES = frozenset(b"0123456789.")
BLANK_BUT_RUNS = bytes(c if c in RUN_BYTES else 32 for c in range(256))  # for bytes.translate
DIGITS = frozenset(b"0123456789")
DOT = ord(".")


@dataclass
class Scan:
    """What the reader needs of a chunk.

    ``tokens`` (in order of first occurrence) with their ``counts``, the
    offset of their first occurrence, their address and the queue record of
    that occurrence (when the scan was given the file's RecordFormat): the
    public tokens not passed on before today; ``known``: occurrences of
    tokens passed on before today; ``dropped``: occurrences of tokens that
    hold no public address; ``lines``: newlines in the chunk.
    """

    lines: int = 0
    known: int = 0
    dropped: int = 0
    tokens: list[bytes] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    firsts: list[int] = field(default_factory=list)
    ips: list[int] = field(default_factory=list)
    records: list[str] = field(default_factory=list)


class TokenFilter:
    """The pass's memory of tokens, at most ``limit`` of them (two generations of sets).

    ``passed``: tokens sent on for ``day``; ``rejected``: tokens that hold no
    public address. Set operations against a chunk's distinct tokens run in
    C; only tokens in neither young set cost Python. For dedupe ``none`` a
    token's address is cached instead (nothing is ever passed on for good).
    """

    def __init__(self, pattern: re.Pattern[bytes], dedupe: str, limit: int) -> None:
        self.pattern, self.dedupe, self.limit = pattern, dedupe, max(limit, 0)
        self.group = 1 if pattern.groups else 0
        # the generic pattern's matches are whole runs of digits and dots: located without
        # running the pattern again (see _locate_runs)
        self.runs = (pattern.pattern, pattern.flags) == (TOKEN_RE.pattern, TOKEN_RE.flags)
        self.day = 0
        self.passed: set[bytes] = set()
        self.passed_old: set[bytes] = set()
        self.rejected: set[bytes] = set()
        self.rejected_old: set[bytes] = set()
        self.addresses: TwoGenerations[bytes, int] = TwoGenerations(self.limit)

    def __len__(self) -> int:
        return (len(self.passed) + len(self.passed_old) + len(self.rejected)
                + len(self.rejected_old) + len(self.addresses))

    def _turn(self, day: int) -> None:
        if day != self.day:  # passed on another day says nothing about this one
            self.day, self.passed, self.passed_old = day, set(), set()
        if len(self) >= self.limit:
            keep = self.limit > 0
            self.passed_old = self.passed if keep else set()
            self.rejected_old = self.rejected if keep else set()
            self.passed, self.rejected = set(), set()
            self.addresses.rotate_if_full()

    def learn(self, tokens: list[bytes], day: int) -> None:
        """Tokens another worker passed on for ``day`` (their chunks are committed):
        not new here either, so the reader does not ask the disk about them again."""
        self._turn(day)
        self.passed.update(tokens)

    def scan(self, chunk: bytes | memoryview, day: int, fmt: RecordFormat | None = None
             ) -> Scan:
        if not chunk:
            return Scan()
        if not isinstance(chunk, bytes):  # a view of the reader's read
            chunk = bytes(chunk)
        self._turn(day)
        # findall (the generic pattern: a split) per segment of whole lines: no Match
        # object per match (they cost a quarter of the scan), and each segment's tokens
        # say roughly where a new token's first match is, so locating it searches one
        # segment, not the chunk.
        segments = _segments(chunk)
        if self.runs:
            blank = chunk.translate(BLANK_BUT_RUNS)
            parts = [_run_matches(blank[begin:end]) for begin, end in segments]
        else:
            findall = self.pattern.findall
            parts = [findall(chunk, begin, end) for begin, end in segments]
        result = Scan(lines=chunk.count(b"\n"))
        if self.dedupe == "none":
            counts = Counter(chain.from_iterable(parts))
            counts.pop(None, None)  # type: ignore[call-overload]  # the group took no part
            counts.pop(b"", None)
            fresh = self._addresses(counts, result)
        else:
            fresh, counts = self._unpassed(parts, result)
        if fresh:
            locate = self._locate_runs if self.runs else self._locate
            located = sorted(locate(chunk, segments, parts, fresh))
            result.firsts = [at for at, _ in located]
            result.tokens = [token for _, token in located]
            result.counts = [counts[t] for t in result.tokens]
            result.ips = [fresh[t] for t in result.tokens]
            if fmt is not None:
                text = fmt.text
                result.records = [text(ip, line_around(chunk, at))
                                  for ip, at in zip(result.ips, result.firsts, strict=True)]
        return result

    def _locate(self, chunk: bytes, segments: list[tuple[int, int]],
                parts: list[list[Any]], tokens: dict[bytes, int]) -> list[tuple[int, bytes]]:
        """(offset of the first match, token) for each of ``tokens``: in the first segment
        whose matches hold it, by ``find`` checked against the pattern on that line, or,
        for a segment with many of them, from the segment's Match objects."""
        located: list[tuple[int, bytes]] = []
        group = self.group
        for begin, end, _, here in _first_segments(segments, parts, tokens):
            unseen = here  # many: all from the segment's Match objects
            if len(here) <= FIND_AT_MOST:
                unseen = set()
                for token in here:
                    at = chunk.find(token, begin, end)
                    while at != -1 and not self._matches_at(chunk, at, token):
                        at = chunk.find(token, at + 1, end)  # inside a longer run, say
                    if at == -1:  # a match this check cannot see (one spanning lines)
                        unseen.add(token)
                    else:
                        located.append((at, token))
            if unseen:
                for m in self.pattern.finditer(chunk, begin, end):
                    token = m.group(group)
                    if token in unseen:
                        unseen.discard(token)
                        located.append((m.start(group), token))
        return located

    def _locate_runs(self, chunk: bytes, segments: list[tuple[int, int]],
                     parts: list[list[Any]], tokens: dict[bytes, int]
                     ) -> list[tuple[int, bytes]]:
        """``_locate`` for the generic pattern, whose match is a whole run of digits and
        dots from its first digit (the greedy ``[0-9.]{6,}`` takes the rest of the run, and
        a run cut short cannot start a match: segments end at a newline). So the text of a
        segment's next match first occurs right where that match is (any earlier copy
        would sit in a run of its own, itself a match), and a copy of a token is its match
        iff no digit or dot follows it and only dots stand between it and a byte that is
        neither (``_is_run_match``)."""
        located: list[tuple[int, bytes]] = []
        find = chunk.find
        for begin, end, part, here in _first_segments(segments, parts, tokens):
            if len(here) <= FIND_RUNS_AT_MOST:
                for token in here:
                    at = find(token, begin, end)
                    while at != -1 and not _is_run_match(chunk, at, len(token)):
                        at = find(token, at + 1, end)
                    if at == -1:  # cannot happen (see above); the slow way is always right
                        return self._locate(chunk, segments, parts, tokens)
                    located.append((at, token))
                continue
            at = begin
            for token in part:  # the segment's matches in order, until all of ``here``
                at = find(token, at, end)
                if at == -1:
                    return self._locate(chunk, segments, parts, tokens)
                if token in here:
                    located.append((at, token))
                    here.discard(token)
                    if not here:
                        break
                at += len(token)
        return located

    def _matches_at(self, chunk: bytes, at: int, token: bytes) -> bool:
        """Whether the pattern, run over the line holding ``at``, matches ``token`` there."""
        begin, end = line_bounds(chunk, at)
        group = self.group
        return any(m.start(group) == at and m.group(group) == token  # (newline included)
                   for m in self.pattern.finditer(chunk, begin, min(end + 1, len(chunk))))

    def _unpassed(self, parts: list[list[Any]], result: Scan
                  ) -> tuple[dict[bytes, int], Counter[bytes]]:
        """Counts what was passed on or rejected before; the rest -> their addresses, and
        the occurrences of the chunk's rejected and new tokens.

        Set operations in C sort the chunk's distinct tokens; only the ones
        in no generation cost Python (their address parsed once). Only the
        rejected and new tokens are counted one by one (``filter`` and
        ``Counter``, in C): the passed ones, nearly all of a chunk, are the
        rest of the total."""
        tokens = set(chain.from_iterable(parts))
        if b"" in tokens or None in tokens:  # a group that took no part: not a token
            tokens.difference_update((b"", None))
            total = sum(1 for token in chain.from_iterable(parts) if token)
        else:
            total = sum(map(len, parts))
        # set.difference walks the smaller side here (the chunk's tokens); ``-=`` would
        # walk all of ``passed`` for every chunk
        rest = tokens.difference(self.passed)
        rejected = rest.intersection(self.rejected)
        rest.difference_update(rejected)
        if rest and self.passed_old:  # passed on before the last turn: young again
            again = rest.intersection(self.passed_old)
            self.passed.update(again)
            rest.difference_update(again)
        if rest and self.rejected_old:
            again = rest.intersection(self.rejected_old)
            self.rejected.update(again)
            rejected.update(again)
            rest.difference_update(again)
        fresh: dict[bytes, int] = {}
        for token in rest:
            ip = public_ip_value(token)
            if ip:
                fresh[token] = ip
            else:
                rejected.add(token)
        self.passed.update(fresh)
        self.rejected.update(rejected)
        counted = rejected.union(fresh)
        counts: Counter[bytes] = Counter(
            filter(counted.__contains__, chain.from_iterable(parts)) if counted else ())
        count = counts.__getitem__
        dropped = sum(map(count, rejected))
        result.dropped = dropped
        result.known = total - dropped - sum(map(count, fresh))
        return fresh, counts

    def _addresses(self, counts: Counter[bytes], result: Scan) -> dict[bytes, int]:
        """Dedupe ``none``: every public token -> its address (cached)."""
        young, old = self.addresses.young, self.addresses.old
        fresh: dict[bytes, int] = {}
        for token, n in counts.items():
            ip = young.get(token)
            if ip is None:
                ip = old.pop(token, None)
                if ip is None:
                    ip = public_ip_value(token)
                young[token] = ip
            if ip:
                fresh[token] = ip
            else:
                result.dropped += n
        return fresh


class Piece(NamedTuple):
    """Complete lines of a file (``chunk``: bytes, or a view of the reader's read), where
    they start (``offset``) and the bytes of the file they account for (``consumed``:
    more when a long line was skipped)."""

    chunk: bytes | memoryview
    consumed: int
    offset: int


class Scanner(Protocol):
    def scans(self, pieces: Iterator[Piece], day: int, fd: int,
              fmt: RecordFormat | None = None) -> Iterator[tuple[Piece, Scan]]:
        """Each piece of the file open as ``fd`` with its Scan; ``day``: the file's day,
        ``fmt``: how its records are written (none without it)."""
        ...

    def close(self) -> None: ...


class InlineScanner:
    """Scans in the reader's own thread (one CPU, or ``logs.scan_processes: 0``)."""

    def __init__(self, tokens: TokenFilter) -> None:
        self.tokens = tokens

    def scans(self, pieces: Iterator[Piece], day: int, fd: int,
              fmt: RecordFormat | None = None) -> Iterator[tuple[Piece, Scan]]:
        for piece in pieces:
            yield piece, self.tokens.scan(piece.chunk, day, fmt)

    def close(self) -> None:
        pass


def _first_segments(segments: list[tuple[int, int]], parts: list[list[Any]],
                    tokens: dict[bytes, int]) -> Iterator[tuple[int, int, list[Any], set[bytes]]]:
    """(begin, end, matches, tokens first matched there) of each segment where one of
    ``tokens`` first occurs: where a new token's first match is searched."""
    left = set(tokens)
    for (begin, end), part in zip(segments, parts, strict=True):
        here = left.intersection(part)
        if here:
            left -= here
            yield begin, end, part, here
            if not left:
                return


def _run_matches(blank: bytes) -> list[bytes]:
    """The generic pattern's matches, in order, in ``blank``: a segment with every byte
    but digits and dots made a blank. A match is a run of digits and dots from its first
    digit, 7 bytes or more (the greedy ``[0-9.]{6,}`` takes the rest of the run; a run too
    short from its first digit is too short from any later one). ``split`` and a length
    check cost three quarters of ``findall``, which tries the pattern at every digit.

    Runs led by dots (rare) are cut to their first digit. Only the long runs need a
    look (a short one is shorter still from a later byte), and one led by a dot is the
    least of them (``.`` sorts before every digit): ``min`` of the found runs says
    whether there is one, at a fraction of the cost of searching the segment for a
    blank followed by a dot (a quarter of this function's time: the blank is most of
    the bytes, so that search moved one byte at a time)."""
    found = [run for run in blank.split() if len(run) > 6]
    if found and min(found)[0] == DOT:
        found = [token for run in found if len(token := run.lstrip(b".")) > 6]
    return found


def _is_run_match(chunk: bytes, at: int, size: int) -> bool:
    """Whether the ``size`` bytes at ``at`` are a match of the generic pattern: the end of a
    run of digits and dots that holds no digit before them."""
    after = at + size
    if after < len(chunk) and chunk[after] in RUN_BYTES:
        return False
    before = at - 1
    while before >= 0 and chunk[before] == DOT:
        before -= 1
    return before < 0 or chunk[before] not in DIGITS


def _segments(chunk: bytes) -> list[tuple[int, int]]:
    """(begin, end) of runs of whole lines of about SEGMENT bytes covering ``chunk``."""
    segments = []
    begin, size = 0, len(chunk)
    while begin < size:
        end = chunk.find(b"\n", begin + SEGMENT) + 1 or size
        segments.append((begin, end))
        begin = end
    return segments


def _serve(conn: Any, readers: list[Any], tokens: TokenFilter) -> None:
    """The worker: a span of the current file in, its Scan out, until EOF."""
    # Ctrl-C reaches the whole process group: the reader stops the pass, and the workers
    # then read EOF (a KeyboardInterrupt here would print a traceback per worker). SIGINT
    # was blocked across the fork, so one that came before this line is dropped with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    for end in readers:  # the reader's ends (this worker's and earlier workers'): closed
        end.close()  # here, so that the reader's death is EOF for every worker at once
    replies: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    writer = threading.Thread(target=_write_replies, args=(conn, replies), daemon=True,
                              name="dhs-logs-scan-replies")
    writer.start()
    fd = -1
    fmt: RecordFormat | None = None
    try:
        while True:
            try:
                kind, day, offset, length, check = REQUEST.unpack(conn.recv_bytes())
                if kind == NEW_FILE:
                    if fd >= 0:
                        os.close(fd)
                    fd = recv_handle(conn)
                    fmt = pickle.loads(conn.recv_bytes())
                    continue
                learned = conn.recv_bytes()
                chunk = os.pread(fd, length, offset)
            except (EOFError, OSError):
                return
            if learned:
                tokens.learn(pickle.loads(learned), day)
            if len(chunk) == length and crc32(chunk) == check:
                replies.put(pickle.dumps(tokens.scan(chunk, day, fmt), pickle.HIGHEST_PROTOCOL))
            else:
                replies.put(NOT_MINE)
            if not writer.is_alive():  # the reader is gone (a write failed)
                return
    finally:
        replies.put(None)


def _write_replies(conn: Any, replies: queue.SimpleQueue[bytes | None]) -> None:
    """The worker's results, in order, until None or the reader is gone."""
    while (reply := replies.get()) is not None:
        try:
            conn.send_bytes(reply)
        except OSError:
            return


class _Worker:
    """One forked scanning process and the reader's end of its socket pair."""

    def __init__(self, tokens: TokenFilter, number: int, earlier: list[_Worker]) -> None:
        context = multiprocessing.get_context("fork")
        self.conn, child = context.Pipe(duplex=True)  # a socket pair: it carries descriptors
        readers = [self.conn, *(w.conn for w in earlier)]
        self.proc: Any = context.Process(target=_serve, args=(child, readers, tokens),
                                         name=f"dhs-logs-scan-{number}", daemon=True)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:  # a Ctrl-C now waits for the parent's unblock; the child ignores it
            self.proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child.close()
        self.alive = True
        self.file = 0  # the number of the reader's file whose descriptor it holds (and format)
        self.learned: list[bytes] = []  # passed on by the other workers since its last span

    def send(self, piece: Piece, day: int, fd: int, file: int,
             fmt: RecordFormat | None) -> None:
        """Ask for ``piece`` of the reader's ``file``-th file, open as ``fd``, its records
        written as ``fmt`` says."""
        if self.alive:
            try:
                if self.file != file:
                    self.conn.send_bytes(REQUEST.pack(NEW_FILE, 0, 0, 0, 0))
                    send_handle(self.conn, fd, self.proc.pid)
                    self.conn.send_bytes(pickle.dumps(fmt))
                    self.file = file
                self.conn.send_bytes(REQUEST.pack(SPAN, day, piece.offset, len(piece.chunk),
                                                  crc32(piece.chunk)))
                self.conn.send_bytes(pickle.dumps(self.learned) if self.learned else b"")
                self.learned = []
            except OSError:
                self._lost()
            except BaseException:
                self._abandon()
                raise

    def receive(self) -> Scan | None:
        """The Scan of the oldest span sent; None if the worker is gone or its bytes
        were not the reader's."""
        if self.alive:
            try:
                reply = self.conn.recv_bytes()
                if reply == NOT_MINE:
                    log.debug("the scanning process %s read other bytes; scanning here",
                              self.proc.pid)
                    return None
                scan: Scan = pickle.loads(reply)
                return scan
            except (EOFError, OSError):
                self._lost()
            except BaseException:
                self._abandon()
                raise
        return None

    def _abandon(self) -> None:
        """A Ctrl-C (or any exception) inside a send or a receive can leave half a
        message on the socket: the worker would wait for the rest, and the reader's
        next receive for an answer that never comes. The stream is given up instead:
        closed, so the worker reads EOF (or fails writing) and exits."""
        self.alive = False
        self.conn.close()

    def _lost(self) -> None:
        log.warning("the scanning process %s is gone; its chunks are scanned in the reader",
                    self.proc.pid)
        self.alive = False

    def join(self) -> None:
        """After ``conn`` is closed: the worker reads EOF and exits."""
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


class ChildScanner:
    """Scans in forked workers, each with up to DEPTH spans in hand (see the module's text).

    Chunks go to the workers in turn; each worker has its own TokenFilter, so
    a token is new once per worker (the seen-set on disk then says it was
    seen today). Create it before any thread starts: a fork copies only the
    calling thread.
    """

    def __init__(self, tokens: TokenFilter, workers: int) -> None:
        self.tokens = tokens  # the workers' copies are used; this one only if one dies
        self._workers: list[_Worker] = []
        self._files = 0  # each scans() call is a new file (descriptors get reused)
        try:
            for n in range(max(workers, 1)):
                self._workers.append(_Worker(tokens, n, self._workers))
        except BaseException:
            self.close()  # the ones already started
            raise

    def _scan(self, worker: _Worker | None, chunk: bytes | memoryview, day: int,
              fmt: RecordFormat | None) -> Scan:
        """The chunk's Scan; the tokens it passed on are told to the other workers with
        their next span (sent only after the caller committed this chunk)."""
        scan = worker.receive() if worker is not None else None
        if scan is None:
            scan = self.tokens.scan(chunk, day, fmt)
        if scan.tokens and self.tokens.dedupe != "none":
            for other in self._workers:
                if other is not worker and other.alive:
                    other.learned.extend(scan.tokens)
        return scan

    def scans(self, pieces: Iterator[Piece], day: int, fd: int,
              fmt: RecordFormat | None = None) -> Iterator[tuple[Piece, Scan]]:
        self._files += 1
        file = self._files
        for worker in self._workers:
            worker.learned = []  # of the last file's day
        sent: deque[tuple[Piece, _Worker | None]] = deque()  # in order
        turn = 0
        try:
            for piece in pieces:  # reading the next chunk overlaps the workers' scans
                worker = None
                if piece.chunk:  # a skipped long line has nothing to scan
                    worker = self._workers[turn % len(self._workers)]
                    turn += 1
                    worker.send(piece, day, fd, file, fmt)
                    if not worker.alive:
                        worker = None
                sent.append((piece, worker))
                if len(sent) > DEPTH * len(self._workers):
                    oldest, holder = sent.popleft()
                    yield oldest, self._scan(holder, oldest.chunk, day, fmt)
            while sent:
                oldest, holder = sent[0]
                scan = self._scan(holder, oldest.chunk, day, fmt)
                sent.popleft()
                yield oldest, scan
        finally:
            for _, holder in sent:  # the reader stopped early: keep the next file in step
                if holder is not None:
                    holder.receive()

    def close(self) -> None:
        for worker in self._workers:
            worker.conn.close()
        for worker in self._workers:
            worker.join()


def open_scanner(tokens: TokenFilter, processes: int | None) -> Scanner:
    """``processes`` workers; None: one per CPU this process may use (at most
    MAX_AUTO_WORKERS), none on a single CPU. 0: scan in the reader's thread."""
    if processes is None:
        processes = min(usable_cpus(), MAX_AUTO_WORKERS) if usable_cpus() >= 2 else 0
    if processes <= 0:
        return InlineScanner(tokens)
    try:
        return ChildScanner(tokens, processes)
    except OSError as exc:  # no fork (process or memory limits): slower, but the pass runs
        log.warning("could not start the scanning processes (%s); scanning in this process",
                    exc)
        return InlineScanner(tokens)
