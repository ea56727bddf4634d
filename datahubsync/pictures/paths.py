r"""Picture paths from the task table → files under a configured root, never outside it.

The task table holds server-local Windows paths (``D:\pic\2025\10\01\a.jpg``);
``serve.picture_roots`` maps client prefixes to directories on this host
(``{prefix: 'D:\pic', path: /srv/pic}``). Two steps, kept apart:

1. :func:`split_client_path` and :func:`map_path` are pure (no I/O): they parse
   the client's path, refuse anything dubious, and pick the root with the
   longest matching prefix. The client side may reuse :func:`split_client_path`
   to build its local mirror path from the same safe segments.
2. :func:`resolve_beneath` touches the filesystem, inside the root only: it
   walks the segments with ``lstat``, follows a symlink only while its target
   stays inside the root, and refuses one that would leave it *before* looking
   at the target, so nothing outside the root is ever stat'ed or opened.

Accepted client paths: ``D:\a\b.jpg`` and ``D:/a/b.jpg`` (either separator, any
mix, drive letter in either case) and POSIX absolute paths (``/data/a.jpg``).
Refused (``None``): empty or longer than :data:`MAX_PATH_CHARS`, control
characters (NUL included), relative and drive-relative paths (``a\b``,
``D:a``), UNC and device paths (``\\host\share``, ``\\?\D:\``), any ``..``
segment, any ``:`` after the drive (alternate data streams, a second drive),
a segment longer than 255 characters, a path naming the root itself, and a
path no root's prefix covers. The prefix is compared case-insensitively for
drive paths (Windows paths are); the part below it is used as written, since
the files live on a case-sensitive filesystem here.

Residual risk, accepted: someone who can write inside a root could swap a
directory for a symlink between the walk and the ``open`` (a few
microseconds); a symlink already there is handled.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO

MAX_PATH_CHARS = 4096
MAX_SEGMENT_CHARS = 255
MAX_SYMLINKS = 40  # as Linux's own path walk
_DRIVE = re.compile(r"^([A-Za-z]):(?:/|$)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ClientPath:
    """A parsed absolute client path: ``anchor`` is ``"D:"`` (upper case) or ``"/"``."""

    anchor: str
    parts: tuple[str, ...]

    @property
    def is_drive(self) -> bool:
        return self.anchor != "/"


def split_client_path(text: str) -> ClientPath | None:
    """Parse ``text`` into anchor and segments, or ``None`` when it is refused (see module)."""
    if not isinstance(text, str) or not text or len(text) > MAX_PATH_CHARS:
        return None
    if _CONTROL.search(text):
        return None
    unified = text.replace("\\", "/")
    if unified.startswith("//"):  # UNC \\host\share and \\?\, \\.\ device paths
        return None
    drive = _DRIVE.match(unified)
    if drive:
        anchor, rest = drive.group(1).upper() + ":", unified[2:]
    elif unified.startswith("/"):
        anchor, rest = "/", unified
    else:  # relative, or drive-relative such as D:pic
        return None
    parts = tuple(p for p in rest.split("/") if p not in ("", "."))
    for part in parts:
        if part == ".." or ":" in part or len(part) > MAX_SEGMENT_CHARS:
            return None
    return ClientPath(anchor, parts)


@dataclass(frozen=True)
class Root:
    """One configured root: client ``prefix`` → directory ``path`` on this host.

    ``path`` is absolute with symlinks resolved once at start, so the walk below
    compares plain strings.
    """

    prefix: ClientPath
    path: str
    label: str

    @classmethod
    def make(cls, prefix: str, path: str | os.PathLike[str]) -> Root:
        """A root from configuration; ValueError when ``prefix`` is not an absolute path."""
        parsed = split_client_path(prefix)
        if parsed is None:
            raise ValueError(f"picture root prefix {prefix!r} is not an absolute path")
        if parsed.is_drive:  # compared case-insensitively
            parsed = ClientPath(parsed.anchor, tuple(p.casefold() for p in parsed.parts))
        return cls(parsed, os.path.realpath(os.fspath(path)), prefix)

    def covers(self, client: ClientPath) -> bool:
        mine = self.prefix
        if client.anchor != mine.anchor or len(client.parts) < len(mine.parts):
            return False
        head = client.parts[: len(mine.parts)]
        if mine.is_drive:
            head = tuple(p.casefold() for p in head)
        return head == mine.parts


@dataclass(frozen=True)
class Mapped:
    """A client path mapped into a root: ``parts`` are the segments below ``root.path``."""

    root: Root
    parts: tuple[str, ...]

    @property
    def local(self) -> str:
        """The joined path on this host (before symlinks are looked at)."""
        return self.root.path.rstrip("/") + "/" + "/".join(self.parts)


def make_roots(pairs: Iterable[tuple[str, str | os.PathLike[str]]]) -> tuple[Root, ...]:
    """Roots ordered longest prefix first, so the first that covers a path wins."""
    roots = [Root.make(prefix, path) for prefix, path in pairs]
    return tuple(sorted(roots, key=lambda r: len(r.prefix.parts), reverse=True))


def map_path(text: str, roots: Sequence[Root]) -> Mapped | None:
    """The root and relative segments for a client path; ``None`` when refused.

    Pure: no filesystem access. ``roots`` as returned by :func:`make_roots`.
    """
    client = split_client_path(text)
    if client is None:
        return None
    for root in roots:
        if root.covers(client):
            rest = client.parts[len(root.prefix.parts):]
            return Mapped(root, rest) if rest else None
    return None


def resolve_beneath(root: str, parts: Sequence[str]) -> tuple[str, os.stat_result] | None:
    """The symlink-free path of ``root/parts`` and its ``lstat``, if a regular file inside.

    ``root`` must be absolute and symlink-free. Only paths inside ``root`` are
    ever stat'ed: a ``..`` (from a symlink target) that would climb above the
    root, or an absolute target not under it, ends the walk with ``None``
    before anything outside is touched. Missing, unreadable, a directory, a
    device or a symlink loop also give ``None``: callers answer all of them the
    same way.
    """
    base = root.rstrip("/")
    root_parts = [p for p in base.split("/") if p]
    done: list[str] = []
    todo = list(reversed(parts))
    links = 0
    st: os.stat_result | None = None
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        st = None  # only a real, freshly stat'ed last component can be the answer
        if part == "..":
            if not done:
                return None
            done.pop()
            continue
        done.append(part)
        path = base + "/" + "/".join(done)
        try:
            st = os.lstat(path)
        except (OSError, ValueError):
            return None
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            links += 1
            if links > MAX_SYMLINKS:
                return None
            try:
                target = os.readlink(path)
            except OSError:
                return None
            done.pop()
            st = None
            segments = target.split("/")
            if target.startswith("/"):
                absolute = [p for p in segments if p not in ("", ".")]
                if absolute[: len(root_parts)] != root_parts:
                    return None
                done = []
                segments = absolute[len(root_parts):]
            todo.extend(reversed(segments))
        elif todo and not stat.S_ISDIR(mode):
            return None
    if st is None or not done or not stat.S_ISREG(st.st_mode):
        return None
    return base + "/" + "/".join(done), st


def open_beneath(mapped: Mapped) -> tuple[IO[bytes], int] | None:
    """The confined file opened for reading (unbuffered) and its size; None when it is
    not served. Blocking: a few ``lstat`` and an ``open``."""
    found = resolve_beneath(mapped.root.path, mapped.parts)
    if found is None:
        return None
    try:
        fd = os.open(found[0], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb", buffering=0), st.st_size
