"""Progress: a bar on a terminal, one INFO line per item otherwise.

Under cron or systemd there is no TTY, and a bar would fill logs with
carriage returns, so we log the start and the end of each item instead.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Protocol

log = logging.getLogger("datahubsync.progress")


class Progress(Protocol):
    """Reports one item's progress (a download, an extraction)."""

    def start(self, item: str, total: int | None) -> None: ...
    def advance(self, amount: int) -> None: ...
    def finish(self, note: str = "") -> None: ...


class LogProgress:
    """One line at the start and one at the end of each item."""

    def __init__(self) -> None:
        self._item = ""
        self._done = 0
        self._started = 0.0

    def start(self, item: str, total: int | None) -> None:
        self._item, self._done, self._started = item, 0, time.monotonic()
        log.info("%s: starting (%s bytes)", item, total if total is not None else "unknown")

    def advance(self, amount: int) -> None:
        self._done += amount

    def finish(self, note: str = "") -> None:
        seconds = max(time.monotonic() - self._started, 1e-9)
        rate = self._done / seconds / 1e6
        log.info("%s: done, %d bytes in %.1fs (%.1f MB/s) %s", self._item, self._done,
                 seconds, rate, note)


class BarProgress:
    """A rich progress bar, shown on stderr while an item runs."""

    def __init__(self, counting: bool = False) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        amount: list[Any] = ([MofNCompleteColumn()] if counting
                             else [DownloadColumn(), TransferSpeedColumn()])
        self._bar: Any = RichProgress(
            TextColumn("{task.description}"), BarColumn(), *amount, TimeRemainingColumn(),
            transient=True,
        )
        self._task: Any = None

    def start(self, item: str, total: int | None) -> None:
        self._bar.start()
        self._task = self._bar.add_task(item, total=total)

    def advance(self, amount: int) -> None:
        self._bar.update(self._task, advance=amount)

    def finish(self, note: str = "") -> None:
        self._bar.stop()


class NullProgress:
    """Reports nothing (JSON output, quiet runs)."""

    def start(self, item: str, total: int | None) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass

    def finish(self, note: str = "") -> None:
        pass


def make_progress(json_output: bool = False, counting: bool = False) -> Progress:
    """A bar when stderr is a terminal and output is for humans, else log lines.

    ``counting``: the bar counts items (days, files) instead of bytes; without a
    terminal the command's own one-line-per-item log is enough, so nothing more.
    """
    if not json_output and sys.stderr.isatty():
        return BarProgress(counting)
    return NullProgress() if counting else LogProgress()
