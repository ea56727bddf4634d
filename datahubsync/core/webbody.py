"""Reading and parsing a request body: one helper for every POST route of ``serve``.

The body is read to its end (aiohttp's ``read(n)`` returns what has arrived,
so a body in several TCP segments needs a loop), never past ``limit`` bytes
(a chunked body has no length to check up front), within ``timeout`` seconds
(a client that trickles its body does not hold the connection), and parsed by
``core.jsonsafe`` so every malformed body is a 400 that names the problem.
"""

from __future__ import annotations

import asyncio
from typing import Any

from datahubsync.core.jsonsafe import BadJson, parse_json


class BodyError(Exception):
    """A body we refuse; ``status`` is the HTTP status that says why (400, 408, 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_limited(request: Any, limit: int, timeout: float | None = None) -> bytes | None:
    """The body of an aiohttp request, or None when it is larger than ``limit`` bytes.

    Raises BodyError(408) when it does not arrive within ``timeout`` seconds.
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while len(body) <= limit:  # read(n) returns what has arrived: loop to the end
                chunk = await request.content.read(limit + 1 - len(body))
                if not chunk:
                    break
                body += chunk
    except TimeoutError:
        raise BodyError(408, f"the request body did not arrive within {timeout:g} s") from None
    return None if len(body) > limit else bytes(body)


async def read_json(request: Any, limit: int, timeout: float | None = None) -> Any:
    """The request's JSON body, or BodyError: 413 too large, 408 too slow, 400 malformed."""
    raw = await read_limited(request, limit, timeout)
    if raw is None:
        raise BodyError(413, f"request body larger than {limit} bytes")
    try:
        return parse_json(raw)
    except BadJson as exc:
        raise BodyError(400, str(exc)) from None
