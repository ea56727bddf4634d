"""Finding and sorting out the address tokens of a chunk, here or in worker processes.

The regex scan and the per-token memory lookups are what a pass costs in
steady state: Python's ``re`` reads ~60-140 MiB/s of these lines, and a
lookup in a memory of 300 000 tokens costs ~0.3-0.8 µs in cache misses,
per distinct token per chunk. Both run in ``TokenFilter``, which sends on
only what the reader must decide: tokens with a public address that it
has not passed on today (or, dedupe ``none``, every public token), with
their counts and the offset of their first match. The reader then does per
new address what it did before (the seen-set on disk, the record, the
commit). Offsets come from Match objects while many tokens are new; once
few are, from ``findall`` plus a ``bytes.find`` per new token (Match
objects cost a quarter of the scan).

``ChildScanner`` runs filters in workers forked before the pass starts its
upload thread (``logs.scan_processes``, one per CPU by default), chunks
going to them in turn, each worker one chunk ahead of the reader: the
reader sends a chunk, then handles an earlier chunk's result while the
workers scan. Lockstep, not a queue: a worker is sent its next chunk only
after its result was received, so neither side ever blocks writing while
the other writes too (a chunk is larger than a socket buffer). If a worker
dies, the reader scans its chunks itself, with a fresh filter, and says so
in the log; if the reader dies (kill -9), the workers read EOF, or fail
writing, and exit.

A filter marks a token as passed on when it sends it: the reader commits
chunks in order, so by the time a later chunk is counted the token's
record or seen-set row is in the same database; if a commit fails the
pass ends, and the workers with it. Each worker's filter is its own, so a
token is new once per worker; the seen-set on disk then says it was seen
today, and the counts come out the same as with one filter.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import re
import signal
import struct
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Protocol

from datahubsync.core.cpus import usable_cpus
from datahubsync.logs.cache import TwoGenerations
from datahubsync.logs.parser import line_bounds, public_ip_value

log = logging.getLogger(__name__)
Match = re.Match
DAY = struct.Struct("<q")
MAX_AUTO_WORKERS = 4
# New tokens located by bytes.find (~0.3 ms each, half a chunk away on average) rather
# than by a second pass with Match objects (~4 ms a chunk)
FIND_AT_MOST = 8


@dataclass
class Scan:
    """What the reader needs of a chunk.

    ``tokens`` (in order of first occurrence) with their ``counts``, the
    offset of their first occurrence and their address: the public tokens
    not passed on before today; ``known``: occurrences of tokens passed on
    before today; ``dropped``: occurrences of tokens that hold no public
    address; ``lines``: newlines in the chunk.
    """

    lines: int = 0
    known: int = 0
    dropped: int = 0
    tokens: list[bytes] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    firsts: list[int] = field(default_factory=list)
    ips: list[int] = field(default_factory=list)


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
        self.day = 0
        self.passed: set[bytes] = set()
        self.passed_old: set[bytes] = set()
        self.rejected: set[bytes] = set()
        self.rejected_old: set[bytes] = set()
        self.addresses: TwoGenerations[bytes, int] = TwoGenerations(self.limit)
        self._many_new = True  # the last chunk had more new tokens than find is worth

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

    def scan(self, chunk: bytes, day: int) -> Scan:
        if not chunk:
            return Scan()
        self._turn(day)
        group = self.group
        # Match objects carry the offsets a new token's record needs, but cost a quarter
        # of the scan; once new tokens are rare, findall and a find per new token are cheaper.
        matches: list[re.Match[bytes]] | None = None
        if self._many_new:
            matches = list(self.pattern.finditer(chunk))
            tokens = list(map(Match.group, matches, repeat(group)))
        else:
            tokens = self.pattern.findall(chunk)
        counts = Counter(tokens)
        counts.pop(None, None)  # type: ignore[call-overload]  # the group did not take part
        counts.pop(b"", None)
        result = Scan(lines=chunk.count(b"\n"))
        if self.dedupe == "none":
            fresh = self._addresses(counts, result)
        else:
            fresh = self._unpassed(counts, result)
        self._many_new = len(fresh) > FIND_AT_MOST
        if fresh:
            # first index of each token: the reversed zip writes the earliest index last
            first = dict(zip(reversed(tokens), range(len(tokens) - 1, -1, -1), strict=True))
            order = sorted(fresh, key=first.__getitem__)
            found = None if matches is not None else self._find_firsts(chunk, order)
            if found is None:
                if matches is None:
                    matches = list(self.pattern.finditer(chunk))
                found = [matches[first[t]].start(group) for t in order]
            result.tokens = order
            result.counts = [counts[t] for t in order]
            result.firsts = found
            result.ips = [fresh[t] for t in order]
        return result

    def _find_firsts(self, chunk: bytes, tokens: list[bytes]) -> list[int] | None:
        """The offset of each token's first match, by ``find`` (None: many tokens, or
        one not found as a match, which a pattern spanning lines could cause)."""
        if len(tokens) > FIND_AT_MOST:
            return None
        found = []
        for token in tokens:
            at = chunk.find(token)
            while at != -1 and not self._matches_at(chunk, at, token):
                at = chunk.find(token, at + 1)  # inside a longer run, or not a match here
            if at == -1:
                return None
            found.append(at)
        return found

    def _matches_at(self, chunk: bytes, at: int, token: bytes) -> bool:
        """Whether the pattern, run over the line holding ``at``, matches ``token`` there."""
        begin, end = line_bounds(chunk, at)
        group = self.group
        return any(m.start(group) == at and m.group(group) == token  # (newline included)
                   for m in self.pattern.finditer(chunk, begin, min(end + 1, len(chunk))))

    def _unpassed(self, counts: Counter[bytes], result: Scan) -> dict[bytes, int]:
        """Counts what was passed on or rejected before; the rest -> their addresses."""
        keys = counts.keys()
        rejected = self.rejected.intersection(keys)  # walks the keys, not all of rejected
        dropped = sum(map(counts.__getitem__, rejected))
        # set.difference walks the smaller side here (the chunk's keys); ``keys - passed``
        # and ``-=`` would walk all of ``passed`` for every chunk
        rest = set(keys).difference(self.passed)
        rest.difference_update(rejected)
        known = sum(counts.values()) - dropped
        fresh: dict[bytes, int] = {}
        for token in rest:
            n = counts[token]
            if token in self.passed_old:
                self.passed.add(token)
                continue
            if token in self.rejected_old:
                self.rejected.add(token)
                dropped += n
                known -= n
                continue
            known -= n
            ip = public_ip_value(token)
            if ip:
                self.passed.add(token)
                fresh[token] = ip
            else:
                self.rejected.add(token)
                dropped += n
        result.known, result.dropped = known, dropped
        return fresh

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


Item = tuple[bytes, int]  # (chunk of complete lines, bytes of the file it consumed)


class Scanner(Protocol):
    def scans(self, items: Iterator[Item], day: int) -> Iterator[tuple[bytes, int, Scan]]:
        """(chunk, consumed, its Scan) for each item; ``day``: the file's day number."""
        ...

    def close(self) -> None: ...


class InlineScanner:
    """Scans in the reader's own thread (one CPU, or ``logs.scan_processes: 0``)."""

    def __init__(self, tokens: TokenFilter) -> None:
        self.tokens = tokens

    def scans(self, items: Iterator[Item], day: int) -> Iterator[tuple[bytes, int, Scan]]:
        for chunk, consumed in items:
            yield chunk, consumed, self.tokens.scan(chunk, day)

    def close(self) -> None:
        pass


def _serve(conn: Any, readers: list[Any], tokens: TokenFilter) -> None:
    """The worker: a day number and a chunk in, its Scan out, until EOF."""
    # Ctrl-C reaches the whole process group: the reader stops the pass, and the workers
    # then read EOF (a KeyboardInterrupt here would print a traceback per worker). SIGINT
    # was blocked across the fork, so one that came before this line is dropped with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    for end in readers:  # the reader's ends (this worker's and earlier workers'): closed
        end.close()  # here, so that the reader's death is EOF for every worker at once
    while True:
        try:
            (day,) = DAY.unpack(conn.recv_bytes())
            chunk = conn.recv_bytes()
        except (EOFError, OSError):
            return
        scan = tokens.scan(chunk, day)
        try:
            conn.send_bytes(pickle.dumps(scan, pickle.HIGHEST_PROTOCOL))
        except OSError:
            return


class _Worker:
    """One forked scanning process and the reader's end of its socket pair."""

    def __init__(self, tokens: TokenFilter, number: int, earlier: list[_Worker]) -> None:
        context = multiprocessing.get_context("fork")
        self.conn, child = context.Pipe(duplex=True)
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

    def send(self, chunk: bytes, day: int) -> None:
        if self.alive:
            try:
                self.conn.send_bytes(DAY.pack(day))  # two messages: no 1 MiB copy to join them
                self.conn.send_bytes(chunk)
            except OSError:
                self._lost()
            except BaseException:
                self._abandon()
                raise

    def receive(self) -> Scan | None:
        """The Scan of the chunk sent last; None if the worker is gone."""
        if self.alive:
            try:
                scan: Scan = pickle.loads(self.conn.recv_bytes())
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
    """Scans in forked workers, each one chunk ahead of the reader (see the module's text).

    Chunks go to the workers in turn; each worker has its own TokenFilter, so
    a token is new once per worker (the seen-set on disk then says it was
    seen today). Create it before any thread starts: a fork copies only the
    calling thread.
    """

    def __init__(self, tokens: TokenFilter, workers: int) -> None:
        self.tokens = tokens  # the workers' copies are used; this one only if one dies
        self._workers: list[_Worker] = []
        try:
            for n in range(max(workers, 1)):
                self._workers.append(_Worker(tokens, n, self._workers))
        except BaseException:
            self.close()  # the ones already started
            raise

    def _scan(self, worker: _Worker, chunk: bytes, day: int) -> Scan:
        scan = worker.receive()
        return scan if scan is not None else self.tokens.scan(chunk, day)

    def scans(self, items: Iterator[Item], day: int) -> Iterator[tuple[bytes, int, Scan]]:
        sent: deque[tuple[Item, _Worker]] = deque()  # in order; each worker holds one
        try:
            for item in items:  # reading the next chunk overlaps the workers' scans
                if len(sent) < len(self._workers):
                    worker = self._workers[len(sent)]
                    worker.send(item[0], day)
                    sent.append((item, worker))
                    continue
                (chunk, consumed), worker = sent.popleft()
                scan = self._scan(worker, chunk, day)
                worker.send(item[0], day)  # only now: it has nothing left to write
                sent.append((item, worker))
                yield chunk, consumed, scan
            while sent:
                (chunk, consumed), worker = sent[0]
                scan = self._scan(worker, chunk, day)
                sent.popleft()
                yield chunk, consumed, scan
        finally:
            for _, worker in sent:  # the reader stopped early: keep the next file in step
                worker.receive()

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
