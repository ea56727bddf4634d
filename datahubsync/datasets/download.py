"""Resumable package download into a ``.part`` file in the state directory.

The part file has a side file recording which package it belongs to (size,
sha256, validator, data version). A later run resumes with ``Range`` plus
``If-Range`` only when the hub still offers that same package; otherwise it
starts from zero. The hash is computed while writing (the bytes already on
disk are hashed once when resuming), then size and sha256 are checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3

from datahubsync.core.crashpoint import CrashPoint
from datahubsync.core.errors import IntegrityError, NetworkError, TempFailError, describe_error
from datahubsync.core.http import RetryPolicy, call_with_retry, raise_for_retryable
from datahubsync.core.progress import NullProgress, Progress
from datahubsync.core.statefile import write_json_atomic

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024  # the most one read returns; less is written as it arrives
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
CHUNK_WRITTEN = CrashPoint("download.chunk_written", "one more received chunk written to .part")
VERIFIED = CrashPoint("download.verified", "the .part is complete, size and sha256 checked")


@dataclass(frozen=True)
class RemotePackage:
    """What the hub says about the package it serves now."""

    name: str
    url: str
    size: int | None
    sha256: str | None
    etag: str | None
    last_updated: str | None


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    sha256: str
    transferred: int
    resumed_from: int


class PackageChanged(NetworkError):
    """The hub replaced the package while we were downloading it."""


class TooLong(IntegrityError):
    """The hub sent more bytes than it announced (or than we allow)."""


class DeadlineExceeded(TempFailError):
    """``--max-time`` (sync.max_time, sync.deadline) ran out."""


class TooSlow(TempFailError):
    """The transfer stayed under sync.min_rate for sync.min_rate_window (curl's
    --speed-limit/--speed-time); the part is kept for the next run."""


@dataclass
class RateWatch:
    """Fails a download that moves fewer than ``minimum`` bytes/s over ``window`` s."""

    minimum: int
    window: float
    clock: Callable[[], float]
    started: float = 0.0
    moved: int = 0

    def begin(self) -> None:
        self.started, self.moved = self.clock(), 0

    def add(self, name: str, count: int) -> None:
        if not self.minimum:
            return
        self.moved += count
        elapsed = self.clock() - self.started
        if elapsed < self.window:
            return
        if self.moved / elapsed < self.minimum:
            raise TooSlow(f"{name}: {self.moved} bytes in the last {elapsed:.0f} s, under "
                          f"sync.min_rate {self.minimum} B/s; the download is kept for the "
                          "next run")
        self.begin()


def _identity(remote: RemotePackage) -> dict[str, Any]:
    return {k: v for k, v in asdict(remote).items() if k != "name"}


@dataclass
class _Part:
    path: Path
    meta_path: Path
    server_etag: str | None = None

    def load_offset(self, remote: RemotePackage) -> int:
        """Bytes already downloaded of *this* package; stale parts are discarded."""
        try:
            meta = json.loads(self.meta_path.read_text("utf-8"))
            size = self.path.stat().st_size
        except (OSError, ValueError):
            self.reset(remote)
            return 0
        if meta.get("identity") != _identity(remote):
            log.info("%s: hub offers a different package than the partial download; "
                     "starting from zero", remote.name)
            self.reset(remote)
            return 0
        self.server_etag = meta.get("server_etag")
        return size

    def reset(self, remote: RemotePackage) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "wb"):
            pass
        self.server_etag = None
        self.save(remote)

    def save(self, remote: RemotePackage) -> None:
        write_json_atomic(self.meta_path, {"identity": _identity(remote),
                                           "server_etag": self.server_etag})

    def discard(self) -> None:
        for p in (self.path, self.meta_path):
            p.unlink(missing_ok=True)


def part_for(path: Path) -> _Part:
    return _Part(path, path.with_name(path.name + ".json"))


def discard_part(path: Path) -> None:
    part_for(path).discard()


def _hash_file(path: Path, digest: Any) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)


def download(
    session: requests.Session,
    remote: RemotePackage,
    part_path: Path,
    *,
    connect_timeout: float,
    read_timeout: float,
    policy: RetryPolicy,
    progress: Progress | None = None,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    max_bytes: int | None = None,
    min_rate: int = 0,
    min_rate_window: float = 60.0,
) -> DownloadResult:
    """Download ``remote`` to ``part_path``, resuming a previous partial download.

    The download stops as soon as it passes ``remote.size`` (what the hub
    announced) or, when the hub announced nothing, ``max_bytes``; whatever
    Content-Length says, or when there is none.
    """
    progress = progress or NullProgress()
    part = part_for(part_path)
    offset = part.load_offset(remote)
    resumed_from = offset
    if remote.size is not None and offset > remote.size:
        part.reset(remote)
        offset = resumed_from = 0
    digest = hashlib.sha256()
    if offset:
        log.info("%s: resuming at byte %d of %s", remote.name, offset, remote.size)
        _hash_file(part.path, digest)
    state = {"offset": offset, "digest": digest, "transferred": 0}
    progress.start(remote.name, remote.size)
    progress.advance(offset)

    limit = remote.size if remote.size is not None else max_bytes
    rate = RateWatch(min_rate, min_rate_window, clock)
    if min_rate:  # no byte for the whole window is a rate of 0: let the read time out there
        read_timeout = min(read_timeout, min_rate_window)

    def attempt() -> None:
        _fetch(session, remote, part, state, connect_timeout, read_timeout, progress, deadline,
               clock, limit, rate)

    try:
        call_with_retry(attempt, policy)
    except TooLong:
        part.discard()
        raise
    finally:
        progress.finish()
    size = part.path.stat().st_size
    sha = state["digest"].hexdigest()
    if remote.size is not None and size != remote.size:
        part.discard()
        raise IntegrityError(f"{remote.name}: downloaded {size} bytes, hub announced "
                             f"{remote.size}; not installed")
    if remote.sha256 and sha != remote.sha256.lower():
        part.discard()
        raise IntegrityError(f"{remote.name}: sha256 mismatch (expected {remote.sha256}, "
                             f"got {sha}); not installed")
    VERIFIED.reached()
    return DownloadResult(part.path, size, sha, state["transferred"], resumed_from)


def _restart(part: _Part, remote: RemotePackage, state: dict[str, Any], why: str) -> None:
    log.warning("%s: %s; restarting from zero", remote.name, why)
    part.reset(remote)
    state["offset"] = 0
    state["digest"] = hashlib.sha256()


def _fetch(session: requests.Session, remote: RemotePackage, part: _Part,
           state: dict[str, Any], connect_timeout: float, read_timeout: float,
           progress: Progress, deadline: float | None, clock: Callable[[], float],
           limit: int | None, rate: RateWatch) -> None:
    offset: int = state["offset"]
    if remote.size is not None and offset == remote.size and offset > 0:
        return  # complete already; verified by the caller
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = part.server_etag or (f'"{remote.etag}"' if remote.etag else None)
        if validator and not validator.startswith("W/"):
            headers["If-Range"] = validator
    if deadline is not None:
        left = deadline - clock()
        if left <= 0:
            raise DeadlineExceeded(f"{remote.name}: the sync's deadline (sync.max_time / "
                                   "sync.deadline / --max-time) passed before the download "
                                   "finished; the download is kept for the next run")
        read_timeout = min(read_timeout, left)
    response = raise_for_retryable(session.get(
        remote.url, headers=headers, stream=True, timeout=(connect_timeout, read_timeout)))
    with response:
        if response.status_code == 416 and offset:
            _restart(part, remote, state, "hub refused the resume range")
            raise requests.ConnectionError("range not satisfiable; retrying from zero")
        if response.status_code == 404:
            raise NetworkError(f"{remote.name}: hub has no package ({remote.url} → 404)")
        if response.status_code not in (200, 206):
            raise NetworkError(f"{remote.name}: unexpected HTTP {response.status_code} "
                               f"from {remote.url}")
        total = _announced_total(response)
        if remote.size is not None and total is not None and total != remote.size:
            part.discard()
            raise PackageChanged(f"{remote.name}: hub replaced the package during the sync "
                                 f"({total} bytes now, {remote.size} announced)")
        if response.status_code == 200 and offset:
            _restart(part, remote, state, "hub sent the whole package (it changed, or it "
                     "does not resume)")
            offset = 0
        elif response.status_code == 206 and not _range_starts_at(response, offset):
            _restart(part, remote, state, "hub answered a different range")
            raise requests.ConnectionError("unexpected Content-Range; retrying from zero")
        etag = response.headers.get("ETag")
        if etag != part.server_etag:
            part.server_etag = etag
            part.save(remote)
        mode = "ab" if offset else "wb"
        rate.begin()
        with open(part.path, mode) as fh:
            try:
                for chunk in _arrived(response):
                    if limit is not None and state["offset"] + len(chunk) > limit:
                        raise TooLong(f"{remote.name}: the hub sent more than the {limit} "
                                      "bytes it announced; download stopped")
                    fh.write(chunk)
                    state["digest"].update(chunk)
                    state["offset"] += len(chunk)
                    state["transferred"] += len(chunk)
                    progress.advance(len(chunk))
                    CHUNK_WRITTEN.reached()
                    rate.add(remote.name, len(chunk))
                    if deadline is not None and clock() > deadline:
                        raise DeadlineExceeded(
                            f"{remote.name}: the sync's deadline (sync.max_time / sync.deadline"
                            f" / --max-time) passed after {state['offset']} bytes; the "
                            "download is kept for the next run")
            finally:
                fh.flush()
                os.fsync(fh.fileno())
    if remote.size is not None and state["offset"] < remote.size:
        raise requests.ConnectionError(
            f"connection closed at byte {state['offset']} of {remote.size}")


def _arrived(response: requests.Response) -> Iterator[bytes]:
    """Yield bytes as they arrive (at most CHUNK at a time).

    ``iter_content(n)`` holds data back until ``n`` bytes are in, so a cut
    connection would lose up to ``n`` received bytes and a deadline would be
    checked late; ``read1`` returns whatever one socket read brought.
    """
    raw = response.raw
    try:
        while chunk := raw.read1(CHUNK, decode_content=True):
            yield chunk
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError,
            urllib3.exceptions.DecodeError) as exc:
        raise requests.ConnectionError(f"connection broken: {describe_error(exc)}") from None


def _announced_total(response: requests.Response) -> int | None:
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match and match.group(3) != "*":
            return int(match.group(3))
        return None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _range_starts_at(response: requests.Response, offset: int) -> bool:
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    return bool(match) and int(match.group(1)) == offset
