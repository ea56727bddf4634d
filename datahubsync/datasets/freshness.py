"""When the hub builds a new package: the freshness rule.

Build when a dataset has no package yet; after that only when files changed
since the packaged version and at least ``newer_ratio`` of them did (a new
trading day's update), or when forced. Never rebuild an unchanged dataset.
Debouncing (nothing changed for ``debounce`` seconds) is the caller's job.

Files changed within ``fresh_since`` (the existing hub's 24 h window) count
too: if a package was built in the middle of an update (the hub restarted,
or the writer paused longer than the debounce), the rest of that update is
less than ``newer_ratio`` of the files and would otherwise never be packaged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class _Entry(Protocol):
    relpath: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Decision:
    build: bool
    reason: str


def signature(entries: Sequence[_Entry]) -> str:
    """A digest of the file list: equal signatures mean nothing changed."""
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(f"{entry.relpath}\0{entry.size}\0{entry.mtime_ns}\n".encode())
    return digest.hexdigest()


def decide(
    entries: Sequence[_Entry],
    packaged_signature: str | None,
    packaged_newest_mtime_ns: int | None,
    newer_ratio: float,
    force: bool = False,
    fresh_since_ns: int | None = None,
) -> Decision:
    """Whether the files in ``entries`` deserve a new package."""
    if not entries:
        return Decision(False, "no files")
    if packaged_signature is None or packaged_newest_mtime_ns is None:
        return Decision(True, "no package yet")
    if signature(entries) == packaged_signature:
        return Decision(False, "unchanged")
    if force:
        return Decision(True, "forced")
    newer = sum(1 for e in entries if e.mtime_ns > packaged_newest_mtime_ns)
    if newer and fresh_since_ns is not None:
        fresh = sum(1 for e in entries if e.mtime_ns > fresh_since_ns)
        if fresh / len(entries) >= newer_ratio:
            return Decision(True, f"{newer} files newer, {fresh}/{len(entries)} changed "
                                  f"in the fresh window ({fresh / len(entries):.0%})")
    share = newer / len(entries)
    if share >= newer_ratio:
        return Decision(True, f"{newer}/{len(entries)} files newer ({share:.0%})")
    return Decision(
        False, f"only {newer}/{len(entries)} files newer ({share:.0%} < {newer_ratio:.0%})"
    )
