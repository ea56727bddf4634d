"""What ``serve`` reports about picture sends: counters by transport and the last send.

Shared by the HTTP route and the legacy TCP listener so both count the same
way. Counting a send is two counter increments and one float: the per-request
cost matters for 200 KB files. Metric names:

- ``datahubsync_pictures_files_sent_total{transport}``
- ``datahubsync_pictures_bytes_sent_total{transport}``
- ``datahubsync_pictures_errors_total{transport,reason}``
- ``datahubsync_pictures_memory_total{result}``: ``/files`` answers looked up in
  the in-memory copies (``hit``: answered from memory, ``miss``: read first)
- ``datahubsync_pictures_last_send_timestamp_seconds`` (Unix time of the last
  successful send by any worker, also across restarts; absent until the first one)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from datahubsync.core.metrics import Metrics
from datahubsync.pictures.lastsend import LastSend

log = logging.getLogger(__name__)

FILES = "datahubsync_pictures_files_sent_total"
BYTES = "datahubsync_pictures_bytes_sent_total"
ERRORS = "datahubsync_pictures_errors_total"
LAST_SEND = "datahubsync_pictures_last_send_timestamp_seconds"
MEMORY = "datahubsync_pictures_memory_total"


@dataclass
class SendStats:
    """Counters in this process's registry plus the shared last-send record."""

    metrics: Metrics
    last_send: LastSend

    def __post_init__(self) -> None:
        self.metrics.describe(FILES, "counter", "Picture files sent by transport")
        self.metrics.describe(BYTES, "counter", "Picture bytes sent by transport")
        self.metrics.describe(ERRORS, "counter", "Picture requests refused or failed, by reason")
        self.metrics.describe(LAST_SEND, "gauge",
                              "Unix time of the last picture sent (any worker, any transport)")
        self.metrics.describe(MEMORY, "counter",
                              "/files answers looked up in memory: hit, or miss (read first)")

    def sent(self, transport: str, nbytes: int, memory: bool | None = None) -> None:
        """One file sent; ``memory``: from a copy in memory (True), read first (False)."""
        now = time.time()
        if memory is not None:
            self.metrics.inc(MEMORY, result="hit" if memory else "miss")
        self.metrics.inc(FILES, transport=transport)
        self.metrics.inc(BYTES, nbytes, transport=transport)
        self.last_send.mark(now)
        self.metrics.set(LAST_SEND, now)

    def error(self, transport: str, reason: str) -> None:
        self.metrics.inc(ERRORS, transport=transport, reason=reason)

    async def _sync(self) -> None:
        try:
            newest = await asyncio.to_thread(self.last_send.sync)
        except OSError as exc:  # a full or read-only state dir must not stop serving
            log.warning("cannot record the last picture send in %s: %s",
                        self.last_send.path, exc)
            return
        if newest is not None:
            self.metrics.set(LAST_SEND, max(newest, self.last_send.latest or 0.0))

    async def background(self, app: Any) -> AsyncIterator[None]:
        """``cleanup_ctx``: load the recorded time, keep the file current, flush at the end."""
        await self._sync()

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.last_send.interval)
                await self._sync()

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self._sync()
