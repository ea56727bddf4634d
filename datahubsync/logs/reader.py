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
from pathlib import Path
from typing import Any

from datahubsync.logs.parser import TOKEN_RE, file_hour, line_around, line_time, public_ip
from datahubsync.logs.queue import FileState, LogQueue

log = logging.getLogger(__name__)
FP_BYTES = 256
JUDGED_MAX = 100_000  # distinct tokens remembered (~15 MB at most)


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


class Extractor:
    """Turns chunks of one file into queue records, deduplicated."""

    def __init__(self, queue: LogQueue, cfg: ReadSettings, name: str,
                 judged: dict[bytes, str] | None = None) -> None:
        self.queue, self.cfg = queue, cfg
        hour = file_hour(name)
        # token -> public IP, or "" when it is none; shared by the files of a pass
        self.judged: dict[bytes, str] = {} if judged is None else judged
        self.day = hour[0] if hour else time.strftime("%Y-%m-%d")
        self.hour = hour[1] if hour else None

    def records(self, chunk: bytes, counts: Counts,
                seen: dict[str, str]) -> list[dict[str, Any]]:
        """Queue records for the addresses of ``chunk`` not seen before; counts the rest.

        Per match only a dict lookup or two happen here; the seen-set is asked
        once per chunk for all its distinct addresses (one query per ~900), not
        once per address.
        """
        cfg, day = self.cfg, self.day
        counts.add(day, "lines", chunk.count(b"\n"))
        judged = self.judged
        if len(judged) > JUDGED_MAX:
            judged.clear()  # bounded; repeated tokens are the common case
        first: dict[str, int] = {}  # address -> offset of its first occurrence here
        occurrences: dict[str, int] = {}
        dropped = 0
        for match in TOKEN_RE.finditer(chunk):
            token = match.group()
            ip = judged.get(token)
            if ip is None:
                ip = judged[token] = public_ip(token) or ""
            if not ip:
                dropped += 1
            elif ip in occurrences:
                occurrences[ip] += 1
            else:
                occurrences[ip] = 1
                first[ip] = match.start()
        total = sum(occurrences.values())
        counts.add(day, "ips", total)
        counts.add(day, "dropped", dropped)
        out: list[dict[str, Any]] = []
        if cfg.dedupe == "none":
            for ip, position in first.items():  # every occurrence travels
                record = self._record(ip, line_around(chunk, position))
                out.extend([record] * occurrences[ip])
            counts.add(day, "queued", len(out))
            return out
        keys = {ip: (ip if cfg.dedupe == "global" else f"{ip}|{day}") for ip in first}
        known = self.queue.last_seen_many([k for k in keys.values() if k not in seen])
        known.update({k: seen[k] for k in keys.values() if k in seen})
        dup_day = dup_global = 0
        for ip, position in first.items():
            key = keys[ip]
            last = known.get(key)
            if last is None:
                seen[key] = day
                out.append(self._record(ip, line_around(chunk, position)))
                dup_day += occurrences[ip] - 1
            elif last == day:
                dup_day += occurrences[ip]
            else:
                dup_global += 1
                dup_day += occurrences[ip] - 1
                seen[key] = day  # remember the newest day it was seen
        counts.add(day, "dup_day", dup_day)
        counts.add(day, "dup_global", dup_global)
        counts.add(day, "queued", len(out))
        return out

    def _record(self, ip: str, line: bytes) -> dict[str, Any]:
        stamp = line_time(line) if self.cfg.timestamp_source == "line" else None
        if stamp is not None:
            timestamp, source, day = f"{stamp[0]} {stamp[1]}", "line", stamp[0]
        else:
            hour = self.hour if self.hour is not None else 0
            timestamp, source, day = f"{self.day} {hour:02d}:00:00", "file_hour", self.day
        return {"ip": ip, "timestamp": timestamp, "timestamp_source": source, "date": day,
                "log_hour": self.hour if self.hour is not None else int(timestamp[11:13]),
                "botnet_type": self.cfg.botnet_type,
                "raw_line_prefix": line[: self.cfg.prefix_chars].decode("utf-8", "replace")}


def read_file(path: Path, queue: LogQueue, cfg: ReadSettings, now: float,
              after_chunk: Callable[[], None] | None = None,
              judged: dict[bytes, str] | None = None) -> Counts:
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
    extractor = Extractor(queue, cfg, path.name, judged)
    with open(path, "rb") as fh:
        fh.seek(state.offset)
        for chunk, consumed in _complete_chunks(fh, cfg, final, path):
            seen: dict[str, str] = {}
            records = extractor.records(chunk, counts, seen) if chunk else []
            state.offset += consumed
            state.fp = state.fp or fp
            queue.commit_chunk(state, records, counts.by_day, seen)
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
