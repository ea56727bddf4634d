"""Checking one entry of a hub's ``/api/datasets`` before anything trusts it.

The catalog comes from a peer: the hub we run, the existing Windows hub, a
static tree behind a CDN, or something broken or hostile. Every field a sync
uses is checked for its type and range here, so a bad entry fails its own
dataset with one clear line and the others still sync. The contract:

- ``name`` (str), ``last_updated`` (str, ISO-8601 local time, or null),
  ``file_count``, ``total_size``, ``package_size`` (int >= 0),
  ``package_ready`` (bool); ours adds ``sha256`` (64 hex), ``etag``,
  ``version`` (``YYYYmmdd_HHMMSS``-like token), ``manifest`` and ``deltas``
  (paths relative to the hub, each delta ``{from, path, size, sha256}``); a static
  tree adds ``package``, the path of that version's own package.
- A ``last_updated`` more than ``max_future`` ahead of our clock is refused:
  recorded, it would make every later real version look older.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from datahubsync.core.timeutil import parse_hub_time

_VERSION = re.compile(r"[0-9A-Za-z_.-]{1,64}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_FUTURE = dt.timedelta(days=1)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _relative_path(value: Any) -> bool:
    return (isinstance(value, str) and 0 < len(value) <= 1024 and not _CONTROL.search(value)
            and not value.startswith(("/", "\\")) and "://" not in value
            and ".." not in value.replace("\\", "/").split("/"))


def entry_problem(entry: Mapping[str, Any], tz: dt.tzinfo, now: dt.datetime,
                  max_future: dt.timedelta = MAX_FUTURE) -> str | None:
    """What is wrong with a catalog entry, or None when a sync may use it."""
    last = entry.get("last_updated")
    if last is not None:
        if not isinstance(last, str) or not 0 < len(last) <= 64 or _CONTROL.search(last):
            return f"last_updated: expected an ISO-8601 time string, got {_kind(last)}"
        try:
            when = parse_hub_time(last, tz)
        except ValueError:
            when = None  # an old hub's odd format: compared as text, as old clients do
        if when is not None and when > now + max_future:
            return (f"last_updated {last} is more than {max_future} ahead of this host's clock "
                    "(is the hub's clock wrong?)")
    for key in ("file_count", "total_size", "package_size"):
        if key in entry and entry[key] is not None and not _is_int(entry[key]):
            return f"{key}: expected a non-negative integer, got {_kind(entry[key])}"
    if "package_ready" in entry and not isinstance(entry["package_ready"], bool):
        return f"package_ready: expected true or false, got {_kind(entry['package_ready'])}"
    sha = entry.get("sha256")
    if sha not in (None, "") and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        return "sha256: expected 64 hexadecimal digits"
    etag = entry.get("etag")
    if etag is not None and not (isinstance(etag, str) and len(etag) <= 256
                                 and not _CONTROL.search(etag)):
        return "etag: expected a short printable string"
    version = entry.get("version")
    if version is not None and not (isinstance(version, str) and _VERSION.fullmatch(version)):
        return "version: expected a short token of letters, digits, '_', '.', '-'"
    if entry.get("manifest") is not None and not _relative_path(entry["manifest"]):
        return "manifest: expected a path relative to the hub"
    if entry.get("package") is not None and not _relative_path(entry["package"]):
        return "package: expected a path relative to the hub"
    deltas = entry.get("deltas")
    if deltas is not None:
        if not isinstance(deltas, list) or len(deltas) > 1000:
            return "deltas: expected a list"
        for n, delta in enumerate(deltas):
            problem = _delta_problem(delta)
            if problem:
                return f"deltas[{n}]: {problem}"
    return None


def _delta_problem(delta: Any) -> str | None:
    if not isinstance(delta, dict):
        return "expected an object"
    if not (isinstance(delta.get("from"), str) and _VERSION.fullmatch(delta["from"])):
        return "from: expected a version token"
    if not _relative_path(delta.get("path")):
        return "path: expected a path relative to the hub"
    if not _is_int(delta.get("size")):
        return "size: expected a non-negative integer"
    sha = delta.get("sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        return "sha256: expected 64 hexadecimal digits"
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"[:60]
    if isinstance(value, str):
        return "an unreadable string"
    return f"a JSON {type(value).__name__.replace('dict', 'object').replace('list', 'array')}"
