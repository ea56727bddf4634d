"""``POST /api/v1/pictures/bundle``: the server's side of the picture bundle.

The exchange is described in :mod:`datahubsync.pictures.bundle_format`.

Each picture goes out as one HTTP chunk, its entry line then its bytes, sent
from the page cache with ``sendfile``, so no picture is held in memory: read
into Python first, eight stalled bundles of 16 MiB pictures held 195 MiB (the
route's CPU was the same either way). The size in the line is the
file's size when it was opened: a file that grows meanwhile is sent up to that
size; a file that shrinks cannot fill its entry, so the connection is dropped
there, and the client keeps the whole entries before it and fetches the rest
one GET each.
"""

from __future__ import annotations

import asyncio
import json
from typing import IO, Any

from aiohttp import web

from datahubsync.core.auth import presented_token, token_matches
from datahubsync.core.config import LoadedConfig
from datahubsync.core.webbody import BodyError, read_json
from datahubsync.pictures.bundle_format import (
    CONTENT_TYPE,
    LARGE,
    MAX_BUNDLED_BYTES,
    MAX_FILES,
    MISSING,
    PATH,
    SAME,
)
from datahubsync.pictures.file_routes import SERVICE, PictureService, url_path_to_client
from datahubsync.pictures.paths import map_path, open_beneath

BODY_LIMIT = 1024 * 1024  # 64 paths of paths.MAX_PATH_CHARS characters, JSON-escaped
TRANSPORT = "http"
# A picture goes out in pieces of this size, each within send_timeout: a 16 MiB picture
# over a slow link is not dropped, a client that reads nothing is
WRITE_PIECE = 256 * 1024


class FileShrank(Exception):
    """A picture became shorter than the size its entry line announced."""


def parse_request(body: Any) -> list[tuple[str, int | None]]:
    """(path, have) of each entry, or BodyError(400) naming what is wrong."""
    entries = body.get("files") if isinstance(body, dict) else None
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_FILES:
        raise BodyError(400, f'expected {{"files": [...]}} with 1 to {MAX_FILES} entries')
    wanted: list[tuple[str, int | None]] = []
    for n, entry in enumerate(entries):
        path = entry.get("path") if isinstance(entry, dict) else None
        have = entry.get("have") if isinstance(entry, dict) else None
        if not isinstance(path, str):
            raise BodyError(400, f"files[{n}].path: a string")
        if have is not None and (type(have) is not int or have < 0):
            raise BodyError(400, f"files[{n}].have: a size in bytes, or absent")
        wanted.append((path, have))
    return wanted


class BundleRoute:
    """The handler; the service (roots, tokens, counters) is the ``/files`` one."""

    def __init__(self, service: PictureService, body_timeout: float,
                 send_timeout: float) -> None:
        """``send_timeout`` (nginx's name): a client that stops reading is dropped after
        this many seconds without progress (a WRITE_PIECE not taken), instead of holding
        the connection and an entry in memory."""
        self.service = service
        self.body_timeout = body_timeout
        self.send_timeout = send_timeout

    async def handle(self, request: web.Request) -> web.StreamResponse:
        service = self.service
        if not token_matches(presented_token(request.headers), service.tokens):
            service.stats.error(TRANSPORT, "unauthorized")
            return web.Response(status=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            wanted = parse_request(await read_json(request, BODY_LIMIT, self.body_timeout))
        except BodyError as exc:
            return web.json_response({"error": str(exc)}, status=exc.status)
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE,
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        try:
            for path, have in wanted:
                line, fobj, size = self._entry(path, have)
                if fobj is None:
                    async with asyncio.timeout(self.send_timeout):
                        await response.write(line)
                    continue
                with fobj:
                    await self._send_picture(request, line, fobj, size)
                service.stats.sent(TRANSPORT, size)
        except (TimeoutError, FileShrank) as exc:  # the answer cannot go on: cut it here
            service.stats.error(TRANSPORT, "send_timeout" if isinstance(exc, TimeoutError)
                                else "file_changed")
            if request.transport is not None:
                request.transport.abort()
            return response
        except (ConnectionError, OSError):
            service.stats.error(TRANSPORT, "client_gone")
            raise
        await response.write_eof()
        return response

    async def _send_picture(self, request: web.Request, line: bytes, fobj: IO[bytes],
                            size: int) -> None:
        """One chunk of the chunked answer, written straight to the connection: its size
        line, the entry line, ``size`` bytes of ``fobj`` by sendfile, and its CRLF.
        (aiohttp's writer frames each write as a chunk of its own; sendfile bypasses it,
        so the framing is written here, in the same order on the same transport.)"""
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        loop = asyncio.get_running_loop()
        transport.write(b"%x\r\n%b" % (len(line) + size, line))
        sent = 0
        while sent < size:  # the deadline is per piece: progress, not a rate
            if transport.is_closing():  # sendfile would raise RuntimeError
                raise ConnectionResetError("the client went away")
            async with asyncio.timeout(self.send_timeout):
                count = await loop.sendfile(transport, fobj, sent, min(WRITE_PIECE, size - sent))
            if not count:
                raise FileShrank(f"{fobj.name}: {sent} of {size} bytes")
            sent += count
        transport.write(b"\r\n")

    def _entry(self, path: str, have: int | None) -> tuple[bytes, IO[bytes] | None, int]:
        """An entry's line, and the open picture and its size when bytes follow."""
        stats = self.service.stats
        # what GET /files/{path} maps for this path, with the client's spelling of it (an
        # empty or over-long path maps to nothing, as there)
        mapped = map_path(url_path_to_client(path.replace("\\", "/").lstrip("/")),
                          self.service.roots)
        opened = open_beneath(mapped) if mapped is not None else None
        if opened is None:
            stats.error(TRANSPORT, "not_found" if mapped else "refused")
            return MISSING, None, 0
        fobj, size = opened
        verdict = SAME if size == have else LARGE if size > MAX_BUNDLED_BYTES else None
        if verdict is not None:  # nothing follows the line
            fobj.close()
            return verdict, None, 0
        return json.dumps({"size": size}).encode() + b"\n", fobj, size


def setup(app: web.Application, loaded: LoadedConfig) -> None:
    """Mount the route beside ``/files`` (when ``serve.picture_roots`` is set)."""
    if SERVICE in app:
        serve = loaded.config.serve
        route = BundleRoute(app[SERVICE], serve.body_timeout, serve.send_timeout)
        app.router.add_post(PATH, route.handle)
