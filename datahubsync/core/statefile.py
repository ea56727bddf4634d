"""Atomic files: whole documents (JSON state files) and files written in pieces.

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
from collections.abc import Callable
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


def created_mode() -> int:
    """The mode ``open()`` gives a new file here: 0o666 without the process's umask
    (a temp file from ``mkstemp`` is 0o600 whatever the umask). Read from
    /proc/self/status, not by setting the umask, which is process-wide; 0o644 where
    the kernel does not say."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o644


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


class AtomicFile:
    """A file written in pieces and put in place whole: ``write`` to ``.NAME.part``
    beside ``dest``, then ``commit`` (fsync, rename over ``dest``, fsync the directory
    unless ``sync_directory`` is false) or ``abort`` (the temp file removed). Readers
    see no file or the complete one.

    With ``stage`` (``core.stagedfiles.StagedFiles``), ``commit`` only closes the
    temp file and hands the writer over: the batch makes its files durable together
    and then calls ``place`` on each.

    The temp name is fixed, so the retry after a kill -9 overwrites what the killed
    run left; callers make sure two writers never share a ``dest`` at once.

    As a context manager: committed at the end of the block unless the block
    committed it, aborted when the block raises (the temp file never stays).
    """

    def __init__(self, dest: Path, sync_directory: bool = True,
                 stage: Callable[[AtomicFile], None] | None = None) -> None:
        self.dest = Path(dest)
        self.tmp = self.dest.with_name(f".{self.dest.name}.part")
        self.sync_directory = sync_directory
        self.stage = stage
        self.device: int | None = None  # of the temp file, once staged
        try:
            self.fobj = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        except FileNotFoundError:  # the first file of its directory
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self.fobj = open(self.tmp, "wb")  # noqa: SIM115
        self.size = 0
        self.committed = False

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_rest: object) -> None:
        if self.committed:
            return
        if kind is not None:
            self.abort()
            return
        try:
            self.commit()
        except BaseException:  # a failed fsync or rename leaves no temp file either
            self.abort()
            raise

    def write(self, data: bytes | memoryview) -> None:
        self.fobj.write(data)
        self.size += len(data)

    def commit(self) -> None:
        self.fobj.flush()
        if self.stage is not None:
            self.device = os.fstat(self.fobj.fileno()).st_dev
            self.fobj.close()
            self.committed = True
            self.stage(self)
            return
        os.fsync(self.fobj.fileno())
        self.fobj.close()
        self.place()
        self.committed = True

    def place(self) -> None:
        """Rename the (closed, durable) temp file over ``dest``."""
        os.replace(self.tmp, self.dest)
        if self.sync_directory:
            fsync_dir(self.dest.parent)

    def abort(self) -> None:
        self.fobj.close()
        self.tmp.unlink(missing_ok=True)


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
