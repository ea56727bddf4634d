"""Reading a request body with a hard size limit (every POST route of ``serve`` uses it)."""

from __future__ import annotations

from typing import Any


async def read_limited(request: Any, limit: int) -> bytes | None:
    """The body of an aiohttp request, or None when it is larger than ``limit`` bytes.

    Checks the declared length first, then reads at most ``limit + 1`` bytes,
    so a chunked body that lies about nothing still cannot exhaust memory.
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    while len(body) <= limit:  # read(n) returns what has arrived, up to n: loop to the end
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return None if len(body) > limit else bytes(body)
