r"""``GET``/``HEAD /files/{client path}``: picture files from ``serve.picture_roots``.

URL form: ``/files/`` followed by the path exactly as the task table stores
it, backslashes turned into ``/`` and each segment percent-encoded as UTF-8.
A client that only knows ``D:\pic\2025\10\01\a.jpg`` asks for
``/files/D:/pic/2025/10/01/a.jpg`` (``quote(path.replace("\\", "/"), safe="/:")``);
``%5C`` for a backslash and ``D%3A`` work too. A POSIX path ``/data/pic/a.jpg``
is ``/files/data/pic/a.jpg``. The server maps it with the same prefixes as the
legacy TCP listener (:mod:`datahubsync.pictures.paths`), so one column value
works for both transports and the client needs no knowledge of the roots.

Answers: 401 without a token of ``serve.api_tokens`` (``Authorization: Bearer``
or ``X-API-Key``, constant-time); 200/206 with Range, ETag, Last-Modified,
If-None-Match → 304 and sendfile (aiohttp's FileResponse); 404 with an empty
body for everything else: refused paths, symlinks leaving the root, missing or
unreadable files and directories all get the very same answer.

Per-request work is kept small because it dominates for 200 KB files: the
path is parsed in memory, the confined walk, the stat and the open run on the
event loop instead of in two executor round trips (see INLINE_OPEN), and there
is no probing for ``.gz``/``.br`` variants (pictures are not precompressed).
A plain ``GET`` (no Range, no conditional header) of a file up to
``serve.picture_cache_file_bytes`` is answered from a per-process copy in memory
(:mod:`datahubsync.core.hotfiles`, checked against the request's own ``lstat``),
with the very headers FileResponse sends; every other request takes FileResponse.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from aiohttp.web_fileresponse import (
    CONTENT_TYPES,
    FALLBACK_CONTENT_TYPE,
    NOSENDFILE,
    _FileResponseResult,
)

from datahubsync.core.auth import presented_token, token_matches
from datahubsync.core.config import LoadedConfig
from datahubsync.core.hotfiles import Copy, HotFiles
from datahubsync.core.httprange import normalise
from datahubsync.core.metrics import Metrics
from datahubsync.pictures.lastsend import LastSend, last_send_path
from datahubsync.pictures.paths import Mapped, Root, make_roots, map_path, resolve_beneath
from datahubsync.pictures.sendstats import SendStats

log = logging.getLogger(__name__)
ROUTE = r"/files/{path:[\s\S]+}"  # any character: control ones get the same 404
TRANSPORT = "http"
SEND_PIECE = 1024 * 1024  # bytes per sendfile call, each within send_timeout
Found = tuple[str, os.stat_result]  # resolve_beneath's answer: the confined path, its lstat
UNWALKED = object()  # the confined walk has not been made for this request yet
# Requests with any of these take FileResponse, which implements their semantics.
NOT_FROM_MEMORY = (hdrs.RANGE, hdrs.IF_RANGE, hdrs.IF_NONE_MATCH, hdrs.IF_MODIFIED_SINCE,
                   hdrs.IF_MATCH, hdrs.IF_UNMODIFIED_SINCE)


@dataclass(frozen=True)
class PictureService:
    """What both transports need: the roots, the accepted tokens, the counters."""

    roots: tuple[Root, ...]
    tokens: tuple[str, ...]
    stats: SendStats
    send_timeout: float  # serve.send_timeout: seconds a send may make no progress
    hot: HotFiles[dict[str, str]]  # this process's copies of small, often-read pictures


SERVICE = web.AppKey("pictures_service", PictureService)


def url_path_to_client(path: str) -> str:
    """The client path a ``/files/`` URL names (its part after ``/files/``, decoded)."""
    if (len(path) >= 2 and path[1] == ":") or path.startswith(("/", "\\")):
        return path
    return "/" + path  # /files/data/pic/a.jpg names /data/pic/a.jpg


class SendTimedOut(ConnectionResetError):
    """The client took nothing for ``serve.send_timeout``: the connection was dropped."""


class PictureFileResponse(web.FileResponse):
    """A FileResponse whose executor call walks the root (see the module docstring).

    Hooks private parts of aiohttp's FileResponse (pinned in constraints.txt;
    tests/test_pictures_serve.py fails if they change):
    ``_get_file_path_stat_encoding`` (confinement, no compressed variants),
    ``_make_response`` (an unreadable file answers 404, not 403), and
    ``_prepare_open_file`` and friends, called without the executor (INLINE_OPEN).
    """

    # The walk (a few lstat), the stat and the open run on the event loop: microseconds
    # with the dentry and inode caches warm, and the executor round trips they replace
    # halved the requests/s of 200 KB files (bench/README.md). On a cold, slow disk a
    # worker waits for the seek; set False to go back to aiohttp's executor calls.
    INLINE_OPEN = True

    def __init__(self, mapped: Mapped | None, stats: SendStats, send_timeout: float,
                 found: Found | None | object = UNWALKED) -> None:
        super().__init__(mapped.local if mapped else "/nonexistent")
        self._mapped = mapped
        self._stats = stats
        self._send_timeout = send_timeout
        self._found = found  # the confined walk's result, once walked (one per request)

    def _resolved(self) -> Found | None:
        if self._found is UNWALKED:
            self._found = (resolve_beneath(self._mapped.root.path, self._mapped.parts)
                           if self._mapped is not None else None)
        return self._found  # type: ignore[return-value]

    def _get_file_path_stat_encoding(
        self, accept_encoding: str
    ) -> tuple[pathlib.Path | None, os.stat_result, str | None]:
        found = self._resolved()
        if found is None:
            raise FileNotFoundError("not served")  # FileResponse answers 404
        return pathlib.Path(found[0]), found[1], None

    def _make_response(self, request: web.BaseRequest, accept_encoding: str) -> Any:
        try:
            return super()._make_response(request, accept_encoding)  # type: ignore[misc]
        except PermissionError:
            raise FileNotFoundError("not served") from None

    def _etag_of_request(self) -> str | None:
        found = self._resolved()
        return None if found is None else f"{found[1].st_mtime_ns:x}-{found[1].st_size:x}"

    async def _prepare_inline(self, request: web.BaseRequest) -> Any:
        """FileResponse.prepare without its two executor hops (walk+stat+open, close)."""
        try:
            result, fobj, st, encoding = self._make_response(request, "")
        except OSError:
            self.set_status(404)
            return await web.StreamResponse.prepare(self, request)
        if result is _FileResponseResult.PRE_CONDITION_FAILED:
            return await self._precondition_failed(request)
        if result is _FileResponseResult.NOT_MODIFIED:
            return await self._not_modified(request, f"{st.st_mtime_ns:x}-{st.st_size:x}",
                                            st.st_mtime)
        assert fobj is not None
        try:
            return await self._prepare_open_file(request, fobj, st, encoding)
        finally:
            fobj.close()

    async def _sendfile(self, request: web.BaseRequest, fobj: Any, offset: int,
                        count: int) -> Any:
        """aiohttp's sendfile, a SEND_PIECE at a time, each within ``send_timeout``
        (nginx's send_timeout): a client that stops reading is dropped, one on a slow
        link is not. A file of one piece (pictures) costs what it did."""
        if NOSENDFILE or self.compression or request.transport is None:
            return await super()._sendfile(request, fobj, offset, count)
        writer = await web.StreamResponse.prepare(self, request)
        loop = asyncio.get_running_loop()
        done = 0
        while done < count:
            piece = min(SEND_PIECE, count - done)
            try:
                async with asyncio.timeout(self._send_timeout):
                    await loop.sendfile(request.transport, fobj, offset + done, piece)
            except NotImplementedError:  # no native sendfile: aiohttp's chunked reads
                return await self._sendfile_fallback(writer, fobj, offset + done,
                                                     count - done)
            except TimeoutError:
                self._stats.error(TRANSPORT, "send_timeout")
                request.transport.abort()
                raise SendTimedOut("the client stopped reading (serve.send_timeout)") from None
            done += piece
        await web.StreamResponse.write_eof(self)
        return writer

    async def prepare(self, request: web.BaseRequest) -> Any:
        if hdrs.RANGE in request.headers:  # the ETag aiohttp sends: mtime_ns-size in hex
            request = normalise(request, self._etag_of_request())
        try:
            writer = await (self._prepare_inline(request) if self.INLINE_OPEN
                            else super().prepare(request))
        except SendTimedOut:
            raise  # counted as send_timeout
        except (ConnectionError, OSError):
            self._stats.error(TRANSPORT, "client_gone")
            raise
        status = self.status
        if status in (200, 206):
            if request.method != hdrs.METH_HEAD:
                self._stats.sent(TRANSPORT, self.content_length or 0)
        elif status == 404:
            self._stats.error(TRANSPORT, "not_found" if self._mapped else "refused")
        elif status != 304:
            self._stats.error(TRANSPORT, f"status_{status}")
        return writer


def memory_headers(local: str, st: os.stat_result) -> dict[str, str]:
    """The headers FileResponse sends for this file (bar Content-Length and Date),
    worked out once per copy kept in memory."""
    kind = CONTENT_TYPES.guess_type(local)[0] or FALLBACK_CONTENT_TYPE
    probe = web.StreamResponse()  # aiohttp's own formatting of ETag and Last-Modified
    probe.etag = f"{st.st_mtime_ns:x}-{st.st_size:x}"
    probe.last_modified = st.st_mtime
    return {hdrs.CONTENT_TYPE: kind, hdrs.ETAG: probe.headers[hdrs.ETAG],
            hdrs.LAST_MODIFIED: probe.headers[hdrs.LAST_MODIFIED], hdrs.ACCEPT_RANGES: "bytes"}


class MemoryFileResponse(web.Response):
    """A picture's bytes from memory, dropped after ``send_timeout`` as a sendfile piece
    is (the copies are at most one SEND_PIECE); counted as sent once written."""

    def __init__(self, copy: Copy[dict[str, str]], hit: bool, send_timeout: float,
                 stats: SendStats) -> None:
        super().__init__(body=copy.data, headers=copy.meta)
        self._hit, self._size = hit, len(copy.data)
        self._send_timeout = send_timeout
        self._stats = stats
        self._expired = False

    def _expire(self, transport: asyncio.BaseTransport) -> None:
        self._expired = True
        transport.abort()

    async def write_eof(self, data: bytes = b"") -> None:
        transport = self._req.transport if self._req is not None else None
        timer = (asyncio.get_running_loop().call_later(self._send_timeout, self._expire,
                                                       transport)
                 if transport is not None else None)
        try:
            await super().write_eof(data)
        except (ConnectionError, OSError):
            if not self._expired:
                self._stats.error(TRANSPORT, "client_gone")
                raise
        finally:
            if timer is not None:
                timer.cancel()
        if self._expired:  # aborted: the drain may end without an error
            self._stats.error(TRANSPORT, "send_timeout")
            raise SendTimedOut("the client stopped reading (serve.send_timeout)")
        self._stats.sent(TRANSPORT, self._size, memory=self._hit)


def may_come_from_memory(request: web.Request, service: PictureService) -> bool:
    """A plain GET, with copies in memory turned on."""
    return (service.hot.enabled and request.method == hdrs.METH_GET
            and not any(name in request.headers for name in NOT_FROM_MEMORY))


def from_memory(mapped: Mapped, found: Found,
                service: PictureService) -> MemoryFileResponse | None:
    """The answer from this process's copy of the confined file ``found``, or None (too
    large, or changed while read): FileResponse answers."""
    hits = service.hot.hits
    copy = service.hot.get(mapped.local, found[0], found[1])
    if copy is None:
        return None
    return MemoryFileResponse(copy, service.hot.hits > hits, service.send_timeout,
                              service.stats)


async def get_file(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    if not token_matches(presented_token(request.headers), service.tokens):
        service.stats.error(TRANSPORT, "unauthorized")
        return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
    mapped = map_path(url_path_to_client(request.match_info["path"]), service.roots)
    found: Found | None | object = UNWALKED  # FileResponse walks, unless done here
    if mapped is not None and may_come_from_memory(request, service):
        found = walked = resolve_beneath(mapped.root.path, mapped.parts)
        if walked is not None:
            answer = from_memory(mapped, walked, service)
            if answer is not None:
                return answer
    return PictureFileResponse(mapped, service.stats, service.send_timeout, found)


def setup(app: web.Application, loaded: LoadedConfig, metrics: Metrics) -> None:
    """Mount ``/files`` when ``serve.picture_roots`` is set; keep the last-send record."""
    cfg = loaded.config.serve
    if not cfg.picture_roots:
        return
    roots = make_roots((r.prefix, r.path) for r in cfg.picture_roots)
    for root in roots:
        if not os.path.isdir(root.path):
            log.warning("picture root %s -> %s is not a directory (yet): its files get 404",
                        root.label, root.path)
    stats = SendStats(metrics, LastSend(last_send_path(loaded.state_dir)))
    hot = HotFiles(cfg.picture_cache_bytes, cfg.picture_cache_file_bytes, memory_headers)
    app[SERVICE] = PictureService(roots, tuple(cfg.api_tokens), stats, cfg.send_timeout, hot)
    app.router.add_get(ROUTE, get_file)
    app.cleanup_ctx.append(stats.background)
