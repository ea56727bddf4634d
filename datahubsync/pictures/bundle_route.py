"""``POST /api/v1/pictures/bundle``: the server's side of the picture bundle.

The exchange is described in :mod:`datahubsync.pictures.bundle_format`. Each
entry is read whole before its line is written, so the size in the line is
the size sent even when the file changes meanwhile.
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
# Read on the event loop up to this size (page cache: tens of microseconds); bigger files
# in a thread, so a cold disk does not hold the other connections
INLINE_READ = 1024 * 1024
TRANSPORT = "http"
# An entry goes out in pieces of this size, each within send_timeout: a 16 MiB picture
# over a slow link is not dropped, a client that reads nothing is
WRITE_PIECE = 256 * 1024


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


def _read_whole(fobj: IO[bytes], size: int) -> bytes:
    """At most ``size`` bytes (a file growing meanwhile is cut at the size it had)."""
    parts = []
    left = size
    while left > 0:
        block = fobj.read(left)
        if not block:
            break  # shrank meanwhile: what is there is what is sent, with its size
        parts.append(block)
        left -= len(block)
    return b"".join(parts)


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
                entry = memoryview(await self._entry(path, have))
                for start in range(0, len(entry), WRITE_PIECE):  # the deadline is per piece:
                    async with asyncio.timeout(self.send_timeout):  # progress, not a rate
                        await response.write(entry[start:start + WRITE_PIECE])
        except TimeoutError:
            service.stats.error(TRANSPORT, "send_timeout")
            if request.transport is not None:
                request.transport.abort()
            return response
        except (ConnectionError, OSError):
            service.stats.error(TRANSPORT, "client_gone")
            raise
        await response.write_eof()
        return response

    async def _entry(self, path: str, have: int | None) -> bytes:
        """One entry's line and bytes."""
        stats = self.service.stats
        # what GET /files/{path} maps for this path, with the client's spelling of it (an
        # empty or over-long path maps to nothing, as there)
        mapped = map_path(url_path_to_client(path.replace("\\", "/").lstrip("/")),
                          self.service.roots)
        opened = open_beneath(mapped) if mapped is not None else None
        if opened is None:
            stats.error(TRANSPORT, "not_found" if mapped else "refused")
            return MISSING
        fobj, size = opened
        with fobj:
            if have is not None and have == size:
                return SAME
            if size > MAX_BUNDLED_BYTES:
                return LARGE
            data = (_read_whole(fobj, size) if size <= INLINE_READ
                    else await asyncio.to_thread(_read_whole, fobj, size))
        stats.sent(TRANSPORT, len(data))
        return b"".join((json.dumps({"size": len(data)}).encode(), b"\n", data))


def setup(app: web.Application, loaded: LoadedConfig) -> None:
    """Mount the route beside ``/files`` (when ``serve.picture_roots`` is set)."""
    if SERVICE in app:
        serve = loaded.config.serve
        route = BundleRoute(app[SERVICE], serve.body_timeout, serve.send_timeout)
        app.router.add_post(PATH, route.handle)
