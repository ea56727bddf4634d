"""The old picture protocol on TCP (``serve.legacy_tcp``), kept for old clients.

Wire format (what the old clients and server speak), one request per connection::

    request   u32 BE path length | path (UTF-8, the task table's Windows path)
    response  u32 BE name length | name (UTF-8, the file's base name) | u64 BE size | bytes
    error     u32 0 | u64 0  (twelve zero bytes), then the connection closes

The path goes through the same mapping and root confinement as ``/files``
(:mod:`datahubsync.pictures.paths`); anything refused, missing or failing
before the header is sent gets the error frame. A failure after the header
(the client stops reading, the file shrinks) can only close the connection:
the client then sees fewer bytes than announced.

Limits: the length prefix is checked before the path is read (0 or more than
``max_path_bytes`` → error frame); the whole request must arrive within
``read_timeout``; a send that makes no progress for ``idle_timeout`` is
dropped; past ``max_connections`` open connections in one process a new one
gets the error frame at once. Bytes go out with ``loop.sendfile`` (the
kernel's sendfile), in chunks so that the idle timeout applies to each.

Processes: ``serve``'s parent binds the listening socket once, before it forks,
exactly like the HTTP socket, and every worker accepts on it (the kernel hands
each connection to one of them). Binding once keeps ``port: 0`` meaningful,
makes a busy port fail at start-up, and needs no SO_REUSEPORT (which would
let a second, stale ``serve`` silently share the port).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator
from typing import IO, Any

from aiohttp import web

from datahubsync.core.config import LoadedConfig
from datahubsync.pictures.config import LegacyTcpConfig
from datahubsync.pictures.file_routes import SERVICE, PictureService
from datahubsync.pictures.paths import map_path, open_beneath

log = logging.getLogger(__name__)
TRANSPORT = "legacy_tcp"
ERROR_FRAME = bytes(12)
SEND_CHUNK = 1024 * 1024
DRAIN_LIMIT = 1024 * 1024
_LENGTH = struct.Struct(">I")
_SIZE = struct.Struct(">Q")


class Refused(Exception):
    """The request gets the error frame; ``reason`` labels the metric."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def response_header(name: str, size: int) -> bytes:
    """Name length, name, size: what precedes the file's bytes."""
    encoded = name.encode("utf-8")
    return _LENGTH.pack(len(encoded)) + encoded + _SIZE.pack(size)


def base_name(client_path: str) -> str:
    return client_path.replace("\\", "/").rstrip("/").rpartition("/")[2]


def _drop(writer: asyncio.StreamWriter) -> None:
    """Close at once with a reset: a stalled peer must not keep megabytes queued for it."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class LegacyTcpServer:
    """Serves the protocol on an already bound socket, inside one serve process."""

    def __init__(self, cfg: LegacyTcpConfig, service: PictureService,
                 shutdown_timeout: float) -> None:
        self.cfg = cfg
        self.service = service
        self.shutdown_timeout = shutdown_timeout
        self._connections: set[asyncio.Task[Any]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: read the request, answer the file or the error frame, close."""
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        stats = self.service.stats
        try:
            try:
                name, fobj, size = await self._open_request(reader)
            except Refused as exc:
                stats.error(TRANSPORT, exc.reason)
                await self._error_frame(reader, writer)
                return
            try:
                writer.write(response_header(name, size))
                sent = await self._send(writer, fobj, size)
            except (ConnectionError, TimeoutError, OSError) as exc:
                # The header is out: all that is left is to drop the connection.
                stats.error(TRANSPORT, "timeout" if isinstance(exc, TimeoutError)
                            else "client_gone")
                _drop(writer)
                return
            finally:
                fobj.close()
            if sent == size:
                stats.sent(TRANSPORT, size)
            else:  # the file shrank while being sent
                stats.error(TRANSPORT, "short_file")
                _drop(writer)
        finally:
            self._connections.discard(task)
            writer.close()

    async def _open_request(self, reader: asyncio.StreamReader) -> tuple[str, IO[bytes], int]:
        """Read and check the request, open the file; Refused (error frame) on any failure."""
        if len(self._connections) > self.cfg.max_connections:
            raise Refused("busy")
        text = await self._read_request(reader)
        mapped = map_path(text, self.service.roots)
        if mapped is None:
            raise Refused("refused")
        try:
            opened = await asyncio.to_thread(open_beneath, mapped)
        except Exception:  # noqa: BLE001 - still the error frame, and a log line to find why
            log.exception("legacy TCP: cannot open a requested file")
            raise Refused("io_error") from None
        if opened is None:
            raise Refused("not_found")
        return base_name(text), opened[0], opened[1]

    async def _read_request(self, reader: asyncio.StreamReader) -> str:
        try:
            async with asyncio.timeout(self.cfg.read_timeout):
                (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
                if length == 0:
                    raise Refused("bad_request")
                if length > self.cfg.max_path_bytes:
                    raise Refused("too_long")
                raw = await reader.readexactly(length)
        except TimeoutError:
            raise Refused("timeout") from None
        except asyncio.IncompleteReadError:
            raise Refused("bad_request") from None
        except (ConnectionError, OSError):
            raise Refused("client_gone") from None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused("bad_request") from None

    async def _send(self, writer: asyncio.StreamWriter, fobj: IO[bytes], size: int) -> int:
        """Send the file after the header; returns the bytes sent (less if it shrank)."""
        loop = asyncio.get_running_loop()
        offset = 0
        while offset < size:
            count = min(SEND_CHUNK, size - offset)
            async with asyncio.timeout(self.cfg.idle_timeout):
                done = await loop.sendfile(writer.transport, fobj, offset, count)
            if done == 0:
                break
            offset += done
        async with asyncio.timeout(self.cfg.idle_timeout):
            await writer.drain()  # the header alone, for an empty file
        return offset

    async def _error_frame(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        """Send the error frame, then half-close and drain what the client still sends.

        Closing with unread input would make the kernel answer with a reset,
        which can destroy the frame before the client reads it.
        """
        try:
            writer.write(ERROR_FRAME)
            async with asyncio.timeout(self.cfg.idle_timeout):
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(1.0):
                discarded = 0
                while discarded < DRAIN_LIMIT and (chunk := await reader.read(65536)):
                    discarded += len(chunk)
        except (ConnectionError, TimeoutError, OSError):
            pass

    async def start(self, sock: socket.socket) -> asyncio.Server:
        return await asyncio.start_server(self.handle, sock=sock)

    async def stop(self, server: asyncio.Server) -> None:
        """Stop accepting; in-flight sends get ``shutdown_timeout`` seconds."""
        server.close()
        pending = set(self._connections)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.shutdown_timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


def attach(app: web.Application, sock: socket.socket, loaded: LoadedConfig,
           announce: bool = False) -> None:
    """Serve the protocol on ``sock`` (bound by the runner) for the app's lifetime.

    Needs the service :func:`file_routes.setup` put in the app (configuration
    validation guarantees ``picture_roots`` whenever ``legacy_tcp`` is set).
    """
    cfg = loaded.config.serve
    assert cfg.legacy_tcp is not None
    server = LegacyTcpServer(cfg.legacy_tcp, app[SERVICE], cfg.shutdown_timeout)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        listener = await server.start(sock)
        if announce:
            host, port = sock.getsockname()[:2]
            log.info("legacy TCP picture protocol on %s:%d", host, port)
        yield
        await server.stop(listener)

    app.cleanup_ctx.append(lifetime)
