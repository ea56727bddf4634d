"""Connection limits for ``serve``: no silent or trickling peer holds a socket forever.

aiohttp closes a keep-alive connection only when *no* byte arrives for
``keepalive_timeout``; a client that sends a header line every few seconds,
or one that connects and says nothing, would otherwise stay for good. What
nginx calls ``client_header_timeout``, ``keepalive_timeout`` and
``worker_connections`` is enforced here:

- ``header_timeout``: once the first byte of a request arrived, its headers
  must be complete within this many seconds;
- ``keepalive_timeout``: a connection with no request under way (a new one,
  or after a response) is closed after this many quiet seconds;
- ``max_connections``: per worker process; one more gets ``503`` and is closed.

The body's own deadline (``body_timeout``) is applied where a route reads it
(``core.webbody.read_limited``). One sweep a second checks every connection,
so a limit holds within a second. Error pages (400 for a malformed request)
never echo the request back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)
SWEEP_SECONDS = 1.0
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass
class ConnectionLimits:
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    max_connections: int = 1024


@dataclass
class ConnectionGuard:
    """The open connections of one worker and the sweep that closes the late ones."""

    limits: ConnectionLimits
    clock: Callable[[], float] = time.monotonic
    open: set[GuardedHandler] = field(default_factory=set)
    refused: int = 0
    closed_late: int = 0

    def sweep(self) -> None:
        now = self.clock()
        for conn in list(self.open):
            if conn.is_busy():
                conn.quiet_since, conn.partial = None, False
                continue
            if conn.quiet_since is None:
                conn.quiet_since = now
                continue
            limit = self.limits.header_timeout if conn.partial else self.limits.keepalive_timeout
            if now - conn.quiet_since > limit:
                self.closed_late += 1
                log.debug("closing a connection from %s: %s", conn.peer,
                          "headers not complete in time" if conn.partial else "idle")
                conn.close_now()

    async def run(self, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        while True:
            await sleep(SWEEP_SECONDS)
            self.sweep()


class GuardedHandler(RequestHandler):
    """aiohttp's request handler, known to the guard from connect to disconnect."""

    __slots__ = ("guard", "quiet_since", "partial", "peer")

    def __init__(self, guard: ConnectionGuard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = guard
        self.quiet_since: float | None = guard.clock()
        self.partial = False
        self.peer: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peer = transport.get_extra_info("peername")
        if len(self.guard.open) >= self.guard.limits.max_connections:
            self.guard.refused += 1
            # answer, stop sending, and close a moment later: closing at once with the
            # request unread would send a reset that can overtake the answer
            transport.write(_BUSY)  # type: ignore[attr-defined]
            if transport.can_write_eof():  # type: ignore[attr-defined]
                transport.write_eof()  # type: ignore[attr-defined]
            asyncio.get_running_loop().call_later(1.0, transport.close)
            return
        self.guard.open.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self in self.guard.open:
            self.guard.open.discard(self)
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self not in self.guard.open:  # refused: its request is read and dropped
            return
        if not self.is_busy():
            self.partial = True
        super().data_received(data)

    def is_busy(self) -> bool:
        return bool(self._request_in_progress or self._messages)

    def close_now(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A short page with the status only: never the request line or a header back."""
        if status >= 500:
            log.error("error handling a request from %s", self.peer, exc_info=exc)
        else:
            log.debug("bad request from %s: %s", self.peer, message)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error page")
        reason = {400: "Bad Request", 408: "Request Timeout", 413: "Payload Too Large",
                  431: "Request Header Fields Too Large"}.get(status, "Error")
        response = web.Response(status=status, text=f"{status} {reason}\n")
        response.force_close()
        return response


class GuardedSite(web.SockSite):
    """A ``SockSite`` whose connections are ``GuardedHandler``s of ``guard``."""

    def __init__(self, runner: web.AppRunner, sock: Any, guard: ConnectionGuard,
                 **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        options = dict(server._kwargs)  # noqa: SLF001 - the handler options the runner set

        def factory() -> GuardedHandler:
            return GuardedHandler(self.guard, server, loop=loop, **options)

        self._server = await loop.create_server(factory, sock=self._sock,
                                                backlog=self._backlog)
