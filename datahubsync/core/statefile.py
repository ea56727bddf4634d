"""Atomic JSON state files.

A state file is either the old complete document or the new complete one:
we write a temp file in the same directory, fsync it, ``os.replace`` it over
the target and fsync the directory, so a crash or kill -9 never leaves half a
file behind.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: Path, obj: Any, mode: int | None = None) -> None:
    """Serialise ``obj`` as indented UTF-8 JSON and replace ``path`` atomically."""
    data = json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n"
    write_bytes_atomic(path, data, mode)


def read_json(path: Path, default: Any) -> Any:
    """Read a JSON state file; a missing file gives ``default``.

    A corrupt file (written by an older, non-atomic client, or damaged on disk)
    is moved aside to ``<name>.corrupt-<time>`` and ``default`` is returned: the
    caller then redoes work rather than trusting garbage.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return default
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.warning("state file %s is unreadable (%s); moved aside to %s", path, exc, aside)
        os.replace(path, aside)
        return default
