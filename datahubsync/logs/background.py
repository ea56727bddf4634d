"""Uploads beside the reading: a thread with its own connection to the queue.

Reading a chunk and the server storing a batch take turns otherwise: with
the server on another core, a pass spent a fifth of its time waiting for
acknowledgements. The thread drains the queue (whole batches, once
``force_upload_threshold`` records wait, as the old script did) while the reader
goes on; the reader only pokes it after each committed chunk. Nothing about
durability changes: records are committed before the thread can see them,
and a batch leaves the queue only when acknowledged, under its own key.
An error in the thread (401/403, the server gone) is raised in the reader at
its next chunk, so a refused key still stops the pass at once.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from datahubsync.logs.queue import LogQueue


class BackgroundUpload:
    def __init__(self, uploader: Any, queue_path: Path, batch_size: int,
                 threshold: int) -> None:
        self.uploader, self.queue_path = uploader, queue_path
        self.batch_size, self.threshold = batch_size, threshold
        self.records = self.batches = 0
        self.error: BaseException | None = None
        self._wake = threading.Event()
        self._final: int | None = None  # the last drain's minimum, once the reader is done
        self._thread = threading.Thread(target=self._run, name="dhs-logs-upload", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """A chunk was committed; raises what went wrong in the thread, if anything did."""
        if self.error is not None:
            raise self.error
        self._wake.set()

    def finish(self, minimum: int) -> None:
        """Drain while at least ``minimum`` records wait, then stop; raises the thread's error."""
        self._final = minimum
        self._wake.set()
        self._thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self, wait: float = 5.0) -> None:
        """The reader failed: stop after the batch in flight. Not waited for longer than
        ``wait`` (it may be sleeping between retries): an unacknowledged batch stays queued
        and goes again under the same key."""
        self._final = -1
        self._wake.set()
        self._thread.join(wait)

    def _run(self) -> None:
        queue = LogQueue(self.queue_path)
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                final = self._final
                queue.recount()  # the reader's commits went through its own connection
                if final is not None:
                    if final > 0:
                        self._drain(queue, final)
                    return
                if queue.depth() >= self.threshold:
                    self._drain(queue, self.batch_size)
        except BaseException as exc:  # handed to the reader
            self.error = exc
        finally:
            queue.close()

    def _drain(self, queue: LogQueue, minimum: int) -> None:
        sent = self.uploader.drain(queue, minimum)
        self.records += sent.records
        self.batches += sent.batches
