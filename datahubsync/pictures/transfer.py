r"""Fetching one picture into the local mirror: HTTP (``serve``'s ``/files``) or legacy TCP.

Local path = ``local_root`` + the server path with its drive and leading
separators dropped, as the old script did (``D:\pic\2025\a.jpg`` → ``{local_root}/
pic/2025/a.jpg``), so an existing mirror is reused. The path is parsed by
the same code the server uses to confine requests
(:func:`datahubsync.pictures.paths.split_client_path`): a task row holding
``..`` or a UNC path is refused, never written outside ``local_root``. URLs
(push tasks may carry them) go under ``{local_root}/_urls/{host}/...``.

A file that already exists with the size the server announces is skipped
(HTTP: a HEAD, or ``have`` in a bundle request; legacy TCP: the size in the
answer's header, then the connection is dropped before the bytes).

Over HTTP, pictures of our own server go ``bundle_files`` at a time in one
``POST /api/v1/pictures/bundle`` (:mod:`datahubsync.pictures.bundle_format`
describes the exchange): per request, not per byte, is what 200 KB pictures
cost on a fast network. Whatever a bundle does not carry (an older server
without the route, a file over the bundle's limit, an entry after a cut or
malformed answer) is fetched with its own ``GET /files/...``, so a broken
bundle costs time, never a picture or an attempt. Where the server has no
bundle route (the nginx front), the new pictures a worker took at once go as
GETs pipelined on one keep-alive connection (``core.pipelined``): the same
saving of round trips, answered in order by nginx.

Every picture is written to a temp name beside the target and checked against
the announced size. Over HTTP, the pictures of one ``fetch_many`` (a bundle, or
the GETs a worker took at once) are then made durable together, with one sync
of the filesystem, and only then renamed into place
(``core.stagedfiles.StagedFiles``: an fsync per picture cost more than the
transfer on loopback); legacy TCP fsyncs each one (``core.statefile.AtomicFile``).
Either way a kill -9, a power cut or a cut connection never leaves a half picture
under the final name. The directories are not fsync'ed: after a power cut, not a
kill, the last pictures recorded as downloaded may be missing from the mirror.
"""

from __future__ import annotations

import errno
import http.client
import json
import logging
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import NoReturn, Protocol
from urllib.parse import quote, unquote, urlsplit

from datahubsync.core.crashpoint import CrashPoint
from datahubsync.core.errors import describe_error
from datahubsync.core.keepalive import ERROR_BODY_MAX, KeepAlivePool
from datahubsync.core.pipelined import Abandon, PipelinedGets
from datahubsync.core.stagedfiles import StagedFiles
from datahubsync.core.statefile import AtomicFile
from datahubsync.pictures import bundle_format
from datahubsync.pictures.paths import split_client_path

log = logging.getLogger(__name__)
CHUNK = 256 * 1024
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
FILE_WRITTEN = CrashPoint("pictures.file_written", "a picture renamed into the mirror, "
                          "its outcome not yet in the ledger")
_LEN = struct.Struct(">I")
_SIZE = struct.Struct(">Q")


class UnsafePath(ValueError):
    """A task names a path that would leave the local root."""


@dataclass(frozen=True)
class Fetched:
    state: str  # downloaded | not_found | error | refused (our server: 401/403)
    size: int | None = None
    error: str | None = None
    skipped: bool = False


class Transport(Protocol):
    def fetch(self, remote: str, dest: Path) -> Fetched: ...

    def fetch_many(self, items: Sequence[tuple[str, Path]]) -> list[Fetched]: ...

    def release_thread(self) -> None:
        """Close what the calling thread holds open (a fetch thread's end)."""

    def close(self) -> None: ...


def is_url(remote: str) -> bool:
    return remote.startswith(("http://", "https://"))


def local_path(local_root: Path, remote: str) -> Path:
    """Where ``remote`` (a server path or a URL) lives in the mirror; UnsafePath if nowhere."""
    if is_url(remote):
        url = urlsplit(remote)
        # A URL's path may hold ':' (``/files/D:/pic/...``): harmless here, not a drive.
        parsed = split_client_path("/" + unquote(url.path).lstrip("/").replace(":", "_"))
        if parsed is None or not parsed.parts or not url.hostname:
            raise UnsafePath(f"refused URL path: {remote!r}")
        return local_root.joinpath("_urls", url.hostname, *parsed.parts)
    parsed = split_client_path(remote)
    if parsed is None or not parsed.parts:
        raise UnsafePath(f"refused path: {remote!r}")
    return local_root.joinpath(*parsed.parts)


def _existing_size(dest: Path) -> int | None:
    try:
        return dest.stat().st_size
    except FileNotFoundError:
        return None


class PathLocks:
    """One lock per destination in flight: two tasks naming the same picture never race."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held: dict[Path, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold_all(self, dests: Sequence[Path]) -> Iterator[None]:
        """Every one of ``dests`` (distinct), taken in one global order: two threads
        holding overlapping sets never wait on each other in a circle."""
        with ExitStack() as stack:
            for dest in sorted(dests, key=str):
                stack.enter_context(self.hold(dest))
            yield

    @contextmanager
    def hold(self, dest: Path) -> Iterator[None]:
        with self._guard:
            lock, users = self._held.get(dest, (threading.Lock(), 0))
            self._held[dest] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._held[dest]
                if users == 1:
                    del self._held[dest]
                else:
                    self._held[dest] = (lock, users - 1)


_NETWORK_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


class HttpTransport:
    """``GET {server_url}/files/{path}`` over keep-alive connections, one per worker thread
    and server.

    Through ``core.keepalive.KeepAlivePool`` (with 200 KB pictures the client's CPU
    bounds the transfer rate; see there): a connection the server closed while
    idle is retried once on a fresh one, a response not read to its end closes
    its connection, and the body length is checked here.
    """

    def __init__(self, server_url: str | None, token: str | None, timeout: float,
                 connections: int = 8, max_bytes: int = DEFAULT_MAX_BYTES,
                 bundle_files: int = 0) -> None:
        self.max_bytes = max_bytes
        self.server_url = server_url
        self.token = token
        self.timeout = timeout
        self.pool = KeepAlivePool(timeout)
        self.ahead = PipelinedGets(timeout)
        # False once the server answered the bundle route with 404/405 (an older serve)
        self.bundles = bundle_files > 1 and bool(server_url)

    def url_for(self, remote: str) -> tuple[str, dict[str, str]]:
        if is_url(remote):
            return remote, ({"Authorization": f"Bearer {self.token}"}
                            if self.is_ours(remote) and self.token else {})
        if not self.server_url:
            raise UnsafePath("pictures.server_url is not set")
        path = quote(remote.replace("\\", "/").lstrip("/"), safe="/:")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return f"{self.server_url}/files/{path}", headers

    def is_ours(self, remote: str) -> bool:
        """A path on ``server_url`` (which takes our token), not some other server's URL."""
        return not is_url(remote) or bool(self.server_url
                                          and remote.startswith(self.server_url + "/"))

    def fetch(self, remote: str, dest: Path) -> Fetched:
        return self.fetch_many([(remote, dest)])[0]

    def _get(self, remote: str, dest: Path, staged: StagedFiles) -> Fetched:
        """One ``GET /files/...`` into ``staged`` (renamed into place by the caller)."""
        url, headers = self.url_for(remote)
        conn: http.client.HTTPConnection | None = None
        try:
            have = _existing_size(dest)
            if have is not None:
                conn, head = self.pool.request("HEAD", url, headers)
                head.read()
                if head.status == 200 and head.getheader("Content-Length") == str(have):
                    return Fetched("downloaded", have, skipped=True)
            conn, response = self.pool.request("GET", url, headers)
            if response.status != 200:
                self.pool.discard(conn, response)  # the error body must not be left for the next
                return _status_failure(response.status, response.reason, self.is_ours(remote))
            expected = response.getheader("Content-Length")
            if expected is not None and (not expected.isdigit()
                                         or int(expected) > self.max_bytes):
                conn.close()
                return Fetched("error", error=f"the server announces {expected[:30]} bytes, "
                               f"more than pictures.max_picture_bytes ({self.max_bytes})")
            try:
                with staged.writer(dest) as writer:
                    buffer = bytearray(CHUNK)
                    view = memoryview(buffer)
                    while read := response.readinto(buffer):
                        writer.write(view[:read])
                        if writer.size > self.max_bytes:
                            raise TooLong(f"more than pictures.max_picture_bytes "
                                          f"({self.max_bytes}) sent; not stored")
                    if expected is not None and int(expected) != writer.size:
                        raise ConnectionError(f"truncated: {writer.size} of {expected} bytes")
                    if _more_waiting(conn.sock):
                        raise TooLong(f"the server sent more than its Content-Length "
                                      f"({expected}); not stored")
            except BaseException:
                conn.close()  # what is left of the response must not reach the next request
                raise
            return Fetched("downloaded", writer.size)
        except UnsafePath:
            raise
        except (http.client.HTTPException, ConnectionError, TimeoutError, ValueError,
                TooLong) as exc:
            if conn is not None:
                conn.close()
            return Fetched("error", error=describe_error(exc))
        except OSError as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, socket.gaierror) or exc.errno in _NETWORK_ERRNOS:
                return Fetched("error", error=describe_error(exc))
            return _local_failure(exc, dest)

    def fetch_many(self, items: Sequence[tuple[str, Path]]) -> list[Fetched]:
        """Each (remote, dest): our server's pictures in one bundle when it has the route,
        the rest (and what the bundle did not carry) one GET each, all of them made
        durable with one sync and then renamed into place (``core.stagedfiles``).
        Destinations must be distinct and held by the caller."""
        got: list[Fetched | None] = [None] * len(items)
        with StagedFiles() as staged:
            ours = [n for n, (remote, _) in enumerate(items) if not is_url(remote)]
            if self.bundles and len(ours) > 1:
                for n, fetched in zip(ours, self._bundle([items[n] for n in ours], staged),
                                      strict=True):
                    got[n] = fetched
            ahead = [n for n in ours if got[n] is None and _existing_size(items[n][1]) is None]
            if len(ahead) > 1:
                for n, fetched in zip(ahead, self._pipelined([items[n] for n in ahead], staged),
                                      strict=True):
                    got[n] = fetched
            done = [fetched if fetched is not None else self._get(*items[n], staged)
                    for n, fetched in enumerate(got)]
            return _placed(items, done, staged)

    def _pipelined(self, items: Sequence[tuple[str, Path]],
                   staged: StagedFiles) -> list[Fetched | None]:
        """New pictures of our server, their GETs written ahead on one connection
        (``core.pipelined``); None for one left to its own GET."""
        assert self.server_url is not None  # only our server's paths come here
        answers = _PictureAnswers([dest for _, dest in items], staged, self.max_bytes)
        targets = []
        for remote, _ in items:
            parts = urlsplit(self.url_for(remote)[0])
            targets.append(parts.path + (f"?{parts.query}" if parts.query else ""))
        self.ahead.get(self.server_url, targets, self.url_for(items[0][0])[1], answers)
        return answers.out

    def _bundle(self, items: Sequence[tuple[str, Path]],
                staged: StagedFiles) -> list[Fetched | None]:
        """One bundle request; None for an entry it did not settle."""
        out: list[Fetched | None] = [None] * len(items)
        have = [_existing_size(dest) for _, dest in items]
        body = json.dumps({"files": [{"path": remote} if size is None
                                     else {"path": remote, "have": size}
                                     for (remote, _), size in zip(items, have, strict=True)]})
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn: http.client.HTTPConnection | None = None
        try:
            conn, response = self.pool.request(
                "POST", f"{self.server_url}{bundle_format.PATH}", headers, body.encode())
            if response.status != 200 or (response.getheader("Content-Type")
                                          != bundle_format.CONTENT_TYPE):
                self.pool.discard(conn, response)
                if response.status in (404, 405):  # an older serve: one GET per picture
                    self.bundles = False
                elif response.status in (401, 403):
                    out = [_refused(response.status)] * len(out)
                return out  # anything else: each picture's own GET says what is wrong
            buffer = memoryview(bytearray(CHUNK))
            for n, (_, dest) in enumerate(items):
                try:
                    out[n] = fetched = self._entry(response, dest, have[n], buffer, staged)
                except LocalError as exc:
                    fetched = out[n] = _local_failure(exc, dest)
                if fetched is not None and fetched.state == "error":
                    conn.close()  # the rest of this entry is still on the wire
                    return out
            if response.read(1):
                raise TooLong("the bundle goes on past its last entry")
        except (http.client.HTTPException, OSError, ValueError, TooLong) as exc:
            # a cut or a malformed answer: what came whole is kept, the rest is fetched alone
            log.debug("bundle from %s broken off (%s); the rest one by one", self.server_url,
                      describe_error(exc))
            if conn is not None:
                conn.close()
        return out

    def _entry(self, response: http.client.HTTPResponse, dest: Path, have: int | None,
               buffer: memoryview, staged: StagedFiles) -> Fetched | None:
        limit = bundle_format.ENTRY_LINE_MAX
        line = response.readline(limit + 1)
        if not line.endswith(b"\n"):
            raise TooLong(f"a bundle entry line that is cut or over {limit} bytes")
        entry = json.loads(line)
        if not isinstance(entry, dict):
            raise ValueError("a bundle entry line that is not an object")
        size = entry.get("size")
        if entry.get("same") is True and have is not None:
            return Fetched("downloaded", have, skipped=True)
        if entry.get("missing") is True:
            return Fetched("not_found", error="not found on the server")
        if entry.get("large") is True:
            return None  # too large for a bundle: fetched alone
        if type(size) is not int or size < 0:
            raise ValueError(f"an unexpected bundle entry: {line[:80]!r}")
        if size > self.max_bytes:
            return Fetched("error", error=f"the server announces {size} bytes, more than "
                           f"pictures.max_picture_bytes ({self.max_bytes})")
        with _on_disk(dest):
            writer = staged.writer(dest)
        with writer:
            _receive_exactly(response.readinto, writer, size, buffer)
            with _on_disk(dest):
                writer.commit()
        return Fetched("downloaded", size)

    def release_thread(self) -> None:
        self.pool.release_thread()
        self.ahead.release_thread()

    def close(self) -> None:
        self.pool.close()
        self.ahead.close()


class _PictureAnswers:
    """Pipelined answers into staged files (a ``core.pipelined.Receiver``): a 200 within
    ``max_bytes`` is downloaded; a 404 not found; an error body is read up to
    ``ERROR_BODY_MAX``; a picture over the limit or a failed disk write settles its
    own entry and abandons the connection."""

    def __init__(self, dests: Sequence[Path], staged: StagedFiles, max_bytes: int) -> None:
        self.dests, self.staged, self.max_bytes = dests, staged, max_bytes
        self.out: list[Fetched | None] = [None] * len(dests)
        self.writer: AtomicFile | None = None
        self.expected: int | None = None
        self.error_bytes = 0

    def begin(self, index: int, status: int, headers: Mapping[str, str]) -> None:
        self.writer, self.error_bytes = None, 0
        if status != 200:
            self.out[index] = _status_failure(status, _phrase(status), ours=True)
            return
        expected = headers.get("content-length")
        if expected is not None and (not expected.isdigit() or int(expected) > self.max_bytes):
            self.out[index] = Fetched("error", error=f"the server announces {expected[:30]} "
                                      f"bytes, more than pictures.max_picture_bytes "
                                      f"({self.max_bytes})")
            raise Abandon
        self.expected = None if expected is None else int(expected)
        try:
            self.writer = self.staged.writer(self.dests[index])
        except OSError as exc:
            self._fail(index, _local_failure(exc, self.dests[index]))

    def body(self, index: int, data: bytes) -> None:
        if self.writer is None:  # an error page: read it (bounded) to keep the connection
            self.error_bytes += len(data)
            if self.error_bytes > ERROR_BODY_MAX:
                raise Abandon
            return
        try:
            self.writer.write(data)
        except OSError as exc:
            self._fail(index, _local_failure(exc, self.dests[index]))
        if self.writer.size > self.max_bytes:
            self._fail(index, Fetched("error", error=f"more than pictures.max_picture_bytes "
                                      f"({self.max_bytes}) sent; not stored"))

    def end(self, index: int) -> None:
        writer, self.writer = self.writer, None
        if writer is None:
            return
        try:
            writer.commit()  # staged: closed now, renamed once the batch is synced
        except OSError as exc:
            writer.abort()
            self.out[index] = _local_failure(exc, self.dests[index])
            return
        self.out[index] = Fetched("downloaded", writer.size)

    def broken(self, index: int, exc: BaseException) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.abort()
            self.out[index] = Fetched("error", error=f"truncated: {writer.size} of "
                                      f"{self.expected} bytes ({describe_error(exc)})")
        elif self.out[index] is None:
            self.out[index] = Fetched("error", error=describe_error(exc))

    def _fail(self, index: int, fetched: Fetched) -> NoReturn:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
        self.out[index] = fetched
        raise Abandon


def _placed(items: Sequence[tuple[str, Path]], fetched: list[Fetched],
            staged: StagedFiles) -> list[Fetched]:
    """``fetched`` once ``staged`` is synced and renamed: a picture whose sync or rename
    failed is a local error, not downloaded."""
    if not len(staged):
        return fetched
    failed = staged.commit(placed=lambda _dest: FILE_WRITTEN.reached())
    return [_local_failure(failed[dest], dest) if dest in failed else got  # only staged fail
            for (_, dest), got in zip(items, fetched, strict=True)]


def _local_failure(exc: OSError, name: Path) -> Fetched:
    """The mirror's disk failed (disk full, permissions, a failed sync): an error that
    names the file, told apart from the network's."""
    return Fetched("error", error=f"local: {exc.strerror or exc}: {exc.filename or name}")


class LocalError(OSError):
    """Writing a picture into the mirror failed (disk full, permissions): the disk's
    problem, not the server's; carries the file name."""


@contextmanager
def _on_disk(name: Path) -> Iterator[None]:
    """An OSError inside is the local disk's (disk full, permissions): a LocalError
    naming the file, told apart from the network's errors around it."""
    try:
        yield
    except OSError as exc:
        raise LocalError(exc.errno, exc.strerror, str(exc.filename or name)) from exc


def _receive_exactly(readinto: Callable[[memoryview], int], writer: AtomicFile, size: int,
                     buffer: memoryview) -> None:
    """``size`` bytes from ``readinto`` (a response's or a socket's) into ``writer``:
    ConnectionError when the peer stops short, LocalError when the disk fails."""
    left = size
    while left:
        got = readinto(buffer[:min(left, len(buffer))])
        if not got:
            raise ConnectionError(f"truncated: {size - left} of {size} bytes")
        with _on_disk(writer.tmp):
            writer.write(buffer[:got])
        left -= got


def _status_failure(status: int, reason: str, ours: bool) -> Fetched:
    """What an answer other than 200 means for a picture: 404/410 not found, 401/403
    from our server a refused token (the pass stops), anything else an error."""
    if status in (404, 410):
        return Fetched("not_found", error=f"HTTP {status} from server")
    if status in (401, 403) and ours:
        return _refused(status)
    return Fetched("error", error=f"HTTP {status} {reason}")


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _refused(status: int) -> Fetched:
    return Fetched("refused", error=f"HTTP {status}: the picture server refused "
                   "pictures.token (missing or wrong)")


class TooLong(Exception):
    """A picture's body is longer than announced or than allowed."""


def _more_waiting(sock: socket.socket | None) -> bool:
    """Bytes already arrived past the end of a response (or of a legacy frame)?"""
    if sock is None:
        return False
    try:
        # a socket with a timeout waits for data inside recv(), whatever the flags: ask
        # select first, which never waits here
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and bool(sock.recv(1, socket.MSG_PEEK))
    except (OSError, ValueError):
        return False


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    buf = bytearray()
    while len(buf) < count:
        chunk = sock.recv(min(count - len(buf), CHUNK))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {count} bytes")
        buf += chunk
    return bytes(buf)


class LegacyTcpTransport:
    """The old picture protocol: one request per connection, to the old ``server.py``
    (u32 BE path length + path; answer u32 BE name length + name + u64 BE size + bytes,
    or twelve zero bytes for an error)."""

    def __init__(self, host: str, port: int, timeout: float,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.address = (host, port)
        self.timeout = timeout
        self.max_bytes = max_bytes

    def fetch(self, remote: str, dest: Path) -> Fetched:
        if is_url(remote):
            return Fetched("error", error="legacy-tcp cannot fetch a URL")
        request = remote.encode("utf-8")
        try:
            with socket.create_connection(self.address, timeout=min(10.0, self.timeout)) as sock:
                sock.settimeout(self.timeout)
                sock.sendall(_LEN.pack(len(request)) + request)
                (name_len,) = _LEN.unpack(_recv_exactly(sock, _LEN.size))
                _recv_exactly(sock, name_len)
                (size,) = _SIZE.unpack(_recv_exactly(sock, _SIZE.size))
                if name_len == 0 and size == 0:
                    return Fetched("not_found", error="error frame from server "
                                                      "(missing or unreadable there)")
                if size > self.max_bytes:
                    return Fetched("error", error=f"the server announces {size} bytes, more "
                                   f"than pictures.max_picture_bytes ({self.max_bytes})")
                if _existing_size(dest) == size:
                    return Fetched("downloaded", size, skipped=True)
                with AtomicFile(dest, sync_directory=False) as writer:
                    _receive_exactly(sock.recv_into, writer, size,
                                     memoryview(bytearray(min(size, CHUNK))))
                    if _more_waiting(sock):
                        raise TooLong(f"the server sent more than the {size} bytes it "
                                      "announced; not stored")
                FILE_WRITTEN.reached()
                return Fetched("downloaded", size)
        except TooLong as exc:
            return Fetched("error", error=str(exc))
        except (OSError, struct.error) as exc:
            if isinstance(exc, OSError) and exc.filename:
                return _local_failure(exc, dest)
            return Fetched("error", error=f"{type(exc).__name__}: {exc}")

    def fetch_many(self, items: Sequence[tuple[str, Path]]) -> list[Fetched]:
        return [self.fetch(remote, dest) for remote, dest in items]

    def release_thread(self) -> None:
        pass  # a connection per request: nothing is kept

    def close(self) -> None:
        pass
