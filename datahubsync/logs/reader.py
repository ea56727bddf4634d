"""Read hourly log files from where we stopped, in bounded chunks, and extract IPs.

Per file we remember (device, inode, offset, fingerprint of the first bytes).
A new inode, a file shorter than our offset, or different first bytes mean the
file was rotated, truncated or replaced: it is read again from the start (the
dedupe set keeps that from sending anything twice) and the log says which.
Only complete lines are consumed; an incomplete last line is read again next
time, unless the file is final (its hour is over and it has been quiet for
``stable_seconds``). A line longer than ``max_line_bytes`` is skipped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from json.encoder import encode_basestring as encode_json_string
from pathlib import Path
from typing import Any

from datahubsync.logs.cache import TwoGenerations
from datahubsync.logs.parser import (
    file_hour,
    ip_text,
    line_around,
    line_time,
    public_ip_value,
    token_pattern,
)
from datahubsync.logs.queue import FileState, LogQueue, day_number

log = logging.getLogger(__name__)
FP_BYTES = 256


@dataclass
class Counts:
    """What a pass found, by day: lines, IPs, queued, and the two kinds of duplicates."""

    by_day: dict[tuple[str, str], int] = field(default_factory=dict)  # not yet committed
    committed: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, day: str, name: str, n: int = 1) -> None:
        self.by_day[(day, name)] = self.by_day.get((day, name), 0) + n

    def total(self, name: str) -> int:
        return sum(v for (_, k), v in self.committed.items() if k == name)


@dataclass
class ReadSettings:
    botnet_type: str
    dedupe: str
    timestamp_source: str
    prefix_chars: int
    chunk_bytes: int
    max_line_bytes: int
    stable_seconds: float
    max_memory_ips: int = 300_000
    ip_regex: str | None = None


def fingerprint(path: Path, length: int = FP_BYTES) -> bytes:
    with open(path, "rb") as fh:
        return hashlib.sha1(fh.read(length)).digest()


def is_final(name: str, mtime: float, now: float, stable: float) -> bool:
    """The file's hour is over and it has not changed for ``stable`` seconds."""
    hour = file_hour(name)
    if hour is None:
        return now - mtime >= stable
    start = dt.datetime.fromisoformat(f"{hour[0]}T{hour[1]:02d}:00:00")
    return (start + dt.timedelta(hours=1)).timestamp() <= now and now - mtime >= stable


NOT_PUBLIC = -1


def new_memory(limit: int) -> TwoGenerations[bytes, int]:
    """What a pass remembers about tokens, shared by its files (at most ``limit`` of them).

    A token maps to NOT_PUBLIC, or (dedupe ``global``/``daily``) to the day
    number its address was last seen on as the seen-set on disk has it, or
    (dedupe ``none``) to the address. One dict for the verdict and the
    seen-state: in the steady state a match costs a dict lookup, not a parse
    (2 µs) plus a seen-set probe (2 µs in SQLite).
    """
    return TwoGenerations(limit)


class Extractor:
    """Turns chunks of one file into queue records, deduplicated."""

    def __init__(self, queue: LogQueue, cfg: ReadSettings, name: str,
                 memory: TwoGenerations[bytes, int]) -> None:
        self.queue, self.cfg, self.memory = queue, cfg, memory
        hour = file_hour(name)
        self.day = hour[0] if hour else time.strftime("%Y-%m-%d")
        self.day_number = day_number(self.day)
        self.botnet_json = encode_json_string(cfg.botnet_type)
        self.hour = hour[1] if hour else None
        self.pattern = token_pattern(cfg.ip_regex)
        self.group = 1 if self.pattern.groups else 0
        # seen-states learnt from this chunk, remembered once its commit is done
        self.learnt: dict[bytes, int] = {}

    def remember(self) -> None:
        """The chunk is committed: what it taught about tokens may be believed."""
        old = self.memory.old
        for token in self.learnt:
            old.pop(token, None)  # (a daily-mode token may be in both; keep one)
        self.memory.young.update(self.learnt)
        self.learnt = {}

    def records(self, chunk: bytes, counts: Counts, seen: dict[int, int]) -> list[str]:
        """Queue records (JSON texts) for the addresses of ``chunk`` not seen before;
        counts the rest; ``seen`` gets the seen-set rows to write with them.

        Each match costs one lookup in the pass's memory; a token it knows as
        seen today (the common case in a sinkhole log) or as no public address
        is only counted. The rest are collected; only tokens the memory does
        not know are parsed and asked of the seen-set on disk, all in one query.
        """
        cfg, day = self.cfg, self.day
        counts.add(day, "lines", chunk.count(b"\n"))
        self.memory.rotate_if_full()
        if cfg.dedupe == "none":
            return self._every_occurrence(chunk, counts)
        young, old = self.memory.young, self.memory.old
        today = self.day_number
        daily = (today << 32) if cfg.dedupe == "daily" else 0
        occurrences: dict[bytes, int] = {}  # tokens to decide -> count, in order of first sight
        first: dict[bytes, int] = {}  # token -> offset of its first occurrence here
        states: dict[bytes, int | None] = {}  # what the memory said about them
        group = self.group
        seen_today = dropped = 0
        recall, recall_old = young.get, old.pop  # bound once: this loop runs per match
        for match in self.pattern.finditer(chunk):
            token = match[group]
            state = recall(token)
            if state == today:
                seen_today += 1
                continue
            if state is None:
                state = recall_old(token, None)
                if state is not None:
                    young[token] = state
                    if state == today:
                        seen_today += 1
                        continue
            if state == NOT_PUBLIC:
                dropped += 1
            elif token in occurrences:
                occurrences[token] += 1
            elif token:
                occurrences[token] = 1
                first[token] = match.start(group)
                states[token] = state
        total, dup_day, dup_global = seen_today, seen_today, 0
        unknown: dict[int, list[bytes]] = {}  # address -> its tokens here, to ask the disk
        for token, n in occurrences.items():
            state = states[token]
            if state is None or daily:  # daily: a day-keyed row other than today's says nothing
                ip = public_ip_value(token)
                if not ip:
                    young[token] = NOT_PUBLIC
                    dropped += n
                    continue
                total += n
                unknown.setdefault(ip, []).append(token)
            else:  # seen on an earlier day: a global duplicate; the seen-set moves on
                total += n
                dup_global += 1
                dup_day += n - 1
                seen[public_ip_value(token)] = today
                self.learnt[token] = today
        out: list[str] = []
        found = self.queue.last_seen_many([daily | ip for ip in unknown]) if unknown else {}
        for ip, tokens in unknown.items():
            key = daily | ip
            n = sum(occurrences[t] for t in tokens)
            last = seen.get(key, found.get(key))
            if last is None:
                seen[key] = today
                position = min(first[t] for t in tokens)
                out.append(self._record(ip, line_around(chunk, position)))
                dup_day += n - 1
            elif last == today:
                dup_day += n
            else:
                dup_global += 1
                dup_day += n - 1
                seen[key] = today
            for token in tokens:
                self.learnt[token] = today
        counts.add(day, "ips", total)
        counts.add(day, "dropped", dropped)
        counts.add(day, "dup_day", dup_day)
        counts.add(day, "dup_global", dup_global)
        counts.add(day, "queued", len(out))
        return out

    def _every_occurrence(self, chunk: bytes, counts: Counts) -> list[str]:
        """Dedupe ``none``: every occurrence of a public address travels."""
        young, old = self.memory.young, self.memory.old
        occurrences: dict[bytes, int] = {}
        first: dict[bytes, int] = {}
        group = self.group
        for match in self.pattern.finditer(chunk):
            token = match.group(group)
            if token in occurrences:
                occurrences[token] += 1
            elif token:
                occurrences[token] = 1
                first[token] = match.start(group)
        out: list[str] = []
        dropped = total = 0
        for token, n in occurrences.items():
            ip = young.get(token)
            if ip is None:
                ip = old.pop(token, None)
                if ip is None:
                    ip = public_ip_value(token) or NOT_PUBLIC
                young[token] = ip
            if ip == NOT_PUBLIC:
                dropped += n
                continue
            total += n
            out.extend([self._record(ip, line_around(chunk, first[token]))] * n)
        counts.add(self.day, "ips", total)
        counts.add(self.day, "dropped", dropped)
        counts.add(self.day, "queued", len(out))
        return out

    def _record(self, ip: int, line: bytes) -> str:
        stamp = line_time(line) if self.cfg.timestamp_source == "line" else None
        if stamp is not None:
            timestamp, source, day = f"{stamp[0]} {stamp[1]}", "line", stamp[0]
        else:
            hour = self.hour if self.hour is not None else 0
            timestamp, source, day = f"{self.day} {hour:02d}:00:00", "file_hour", self.day
        # Written out rather than json.dumps of a dict (a third of the time per record):
        # the address, stamps and hour are digits and dashes; only the two free texts
        # need JSON string escaping.
        log_hour = self.hour if self.hour is not None else int(timestamp[11:13])
        prefix = encode_json_string(line[: self.cfg.prefix_chars].decode("utf-8", "replace"))
        return (f'{{"ip": "{ip_text(ip)}", "timestamp": "{timestamp}", "timestamp_source": '
                f'"{source}", "date": "{day}", "log_hour": {log_hour}, "botnet_type": '
                f'{self.botnet_json}, "raw_line_prefix": {prefix}}}')


def read_file(path: Path, queue: LogQueue, cfg: ReadSettings, now: float,
              after_chunk: Callable[[], None] | None = None,
              memory: TwoGenerations[bytes, int] | None = None) -> Counts:
    """Read what is new in ``path``; every chunk is committed with its offset."""
    counts = Counts()
    st = path.stat()
    state = queue.file(str(path))
    # The first bytes identify the file once there are enough of them to be stable.
    fp = fingerprint(path) if st.st_size >= FP_BYTES else b""
    if state is None:
        state = FileState(str(path), st.st_dev, st.st_ino, 0, fp, False)
    elif (state.dev, state.ino) != (st.st_dev, st.st_ino):
        log.warning("%s was replaced (new inode); reading it from the start", path)
        state = FileState(str(path), st.st_dev, st.st_ino, 0, fp, False)
    elif st.st_size < state.offset:
        log.warning("%s was truncated (%d < %d bytes); reading it from the start", path,
                    st.st_size, state.offset)
        state = FileState(str(path), st.st_dev, st.st_ino, 0, fp, False)
    elif state.fp and fp != state.fp:
        log.warning("%s was rewritten (its first bytes changed); reading it from the start",
                    path)
        state = FileState(str(path), st.st_dev, st.st_ino, 0, fp, False)
    elif state.done and st.st_size == state.offset:
        return counts
    final = is_final(path.name, st.st_mtime, now, cfg.stable_seconds)
    if memory is None:
        memory = new_memory(cfg.max_memory_ips)
    extractor = Extractor(queue, cfg, path.name, memory)
    with open(path, "rb") as fh:
        fh.seek(state.offset)
        for chunk, consumed in _complete_chunks(fh, cfg, final, path):
            seen: dict[int, int] = {}
            records = extractor.records(chunk, counts, seen) if chunk else []
            state.offset += consumed
            state.fp = state.fp or fp
            queue.commit_chunk(state, records, counts.by_day, seen)
            extractor.remember()
            for key, value in counts.by_day.items():
                counts.committed[key] = counts.committed.get(key, 0) + value
            counts.by_day.clear()
            if after_chunk is not None:
                after_chunk()
        if final and state.offset >= os.fstat(fh.fileno()).st_size and not state.done:
            state.done = True
            queue.commit_chunk(state, [], {}, {})
    return counts


def _complete_chunks(fh: Any, cfg: ReadSettings, final: bool,
                     path: Path) -> Iterator[tuple[bytes, int]]:
    """(complete lines, bytes consumed); the tail without a newline waits unless final."""
    carry = b""
    skipping = False
    while True:
        data = fh.read(cfg.chunk_bytes)
        if not data:
            if carry and final and not skipping:
                yield carry, len(carry)  # the last line of a finished file
            elif carry and skipping and final:
                yield b"", len(carry)
            return
        data = carry + data
        if skipping:
            newline = data.find(b"\n")
            if newline == -1:
                yield b"", len(data)  # still inside the long line: drop it
                carry = b""
                continue
            yield b"", newline + 1
            data, skipping = data[newline + 1:], False
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) > cfg.max_line_bytes:
                log.warning("%s: a line longer than %d bytes was skipped", path,
                            cfg.max_line_bytes)
                skipping = True
                yield b"", len(data)
                carry = b""
            else:
                carry = data
            continue
        yield data[:cut], cut
        carry = data[cut:]
