"""The one service loop of the long-running commands (``pictures run``, ``logs run``).

systemd runs them with ``Type=notify`` and ``WatchdogSec=``: the loop says
``READY=1`` once, ``WATCHDOG=1`` after every healthy pass (and from inside a
long pass through :meth:`ServiceLoop.heartbeat`), ``STATUS=...`` with what the
pass did, and ``STOPPING=1`` at the end. A loop that makes no progress while
work waits for ``stall_timeout`` raises :class:`StalledError` (exit 1, and
``Restart=on-failure`` starts it afresh; it never re-executes itself). SIGTERM
ends it at once (the features are crash-safe: a pass stopped half way is
finished by the next run), with exit 0 as ``systemctl stop`` expects. Between
passes it sleeps through the injected ``sleep``, which a :class:`~core.wakeup.Wakeup`
can cut short when work arrives.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from datahubsync.core.errors import DatahubsyncError
from datahubsync.core.sdnotify import notify as sd_notify


class StalledError(DatahubsyncError):
    """No progress for ``stall_timeout`` while work waited: exit so systemd restarts us."""


class ServiceStop(BaseException):
    """SIGTERM: stop the loop now (BaseException: no ``except Exception`` swallows it)."""


@dataclass
class Pass:
    """What one pass of a service did, for the loop's bookkeeping."""

    progressed: bool  # moved something (downloaded, uploaded, processed)
    idle: bool  # nothing was waiting: as healthy as progress
    status: str  # for STATUS= and the log
    next_in: float | None = None  # seconds to the next pass (None: the interval)
    error: str | None = None  # the last error, named when the loop stalls
    details: dict[str, Any] = field(default_factory=dict)  # for the fleet report


@dataclass
class ServiceLoop:
    """Run ``step`` pass after pass until SIGTERM, with systemd's notifications."""

    name: str
    interval: float
    stall_timeout: float | None = None
    notify: Callable[[str], Any] = sd_notify
    sleep: Callable[[float], Any] = time.sleep
    clock: Callable[[], float] = time.monotonic
    # after each pass: (status, details, healthy) to the fleet report (throttled there)
    report: Callable[[str, dict[str, Any], bool], Any] | None = None

    def heartbeat(self, status: str) -> None:
        """Inside a long pass: the loop is alive (WATCHDOG=1) and doing ``status``."""
        self.notify("WATCHDOG=1")
        self.notify(f"STATUS={status}")

    def run(self, step: Callable[[], Pass], passes: int | None = None) -> int:
        """Returns 0 after SIGTERM (or ``passes`` passes); raises StalledError."""
        last_progress = self.clock()
        last_error = "none"
        done = 0
        self.notify("READY=1")
        try:
            with _stop_on_sigterm():
                while passes is None or done < passes:
                    done += 1
                    outcome = step()
                    if outcome.progressed or (outcome.idle and outcome.error is None):
                        last_progress = self.clock()
                        self.notify("WATCHDOG=1")
                    if outcome.error:
                        last_error = outcome.error
                    self.notify(f"STATUS={outcome.status}")
                    if self.report is not None:
                        self.report(outcome.status, outcome.details,
                                    outcome.error is None)
                    stuck = self.clock() - last_progress
                    if self.stall_timeout is not None and stuck >= self.stall_timeout:
                        raise StalledError(
                            f"{self.name}: no progress for {stuck / 3600:.1f} h (stall_timeout "
                            f"{self.stall_timeout:g}s); last error: {last_error}")
                    self.sleep(self.interval if outcome.next_in is None else outcome.next_in)
        except ServiceStop:
            pass
        finally:
            self.notify("STOPPING=1")
        return 0


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM raises ServiceStop in the main thread (a no-op elsewhere)."""

    def handler(_signum: int, _frame: Any) -> None:
        raise ServiceStop()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
