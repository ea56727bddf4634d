"""Named crash points: a testing aid that kills the process at one exact step.

Long commands name their critical steps with module-level constants::

    AFTER_SWAP = CrashPoint("install.after_swap", "new tree in place, journal still there")
    ...
    AFTER_SWAP.reached()

When the environment variable ``DATAHUBSYNC_CRASH_AT`` names the point, the
process sends itself SIGKILL there, exactly as ``kill -9`` would (no
``finally``, no atexit, no flush). ``NAME:N`` kills the Nth time the point is
reached in that process (``download.chunk_written:3`` = after the third chunk).
Unset, ``reached()`` costs one environment lookup.

Crash tests loop over the points instead of killing after a sleep, so they
prove the same thing on a fast machine and on a loaded one. The test suite
lists every ``CrashPoint(...)`` in the package and fails when one of them is
killed at by no test.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

ENV = "DATAHUBSYNC_CRASH_AT"


@dataclass(frozen=True)
class CrashPoint:
    """One step a crash test can kill the process right after."""

    name: str
    after: str  # what has just happened when the point is reached (for --help of tests)
    _hits: list[int] = field(default_factory=lambda: [0], compare=False, repr=False)

    def reached(self) -> None:
        """Die here if ``DATAHUBSYNC_CRASH_AT`` asks for this point (and this count)."""
        wanted = os.environ.get(ENV)
        if not wanted or not wanted.startswith(self.name):
            return
        name, _, count = wanted.partition(":")
        if name != self.name:
            return
        self._hits[0] += 1
        if self._hits[0] == (int(count) if count.isdigit() else 1):
            os.kill(os.getpid(), signal.SIGKILL)
