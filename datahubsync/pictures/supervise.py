"""``pictures run --supervise``: restart the worker for hosts without systemd.

The old client restarted itself with ``os.execl`` and leaked its grown PATH into
every generation. Here a parent process starts ``datahubsync pictures run``
as a child with the parent's environment unchanged, waits, and starts it
again after ``delay`` seconds when it fails. A clean exit, a configuration
error (exit 2: a restart cannot fix it) or Ctrl-C ends the supervisor.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from datahubsync.core.errors import ExitCode
from datahubsync.core.selfexec import self_argv

log = logging.getLogger("datahubsync.pictures")


def supervise_worker(args: list[str], delay: float,
                     sleep: Callable[[float], None] = time.sleep,
                     max_restarts: int | None = None) -> int:
    """Run ``datahubsync ARGS`` until it exits 0 or 2; returns the exit code to use."""
    restarts = 0
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: Any) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            child = subprocess.Popen([*self_argv(), *args])
            code = child.wait()
            if code in (ExitCode.OK, ExitCode.USAGE):
                return code
            restarts += 1
            if max_restarts is not None and restarts > max_restarts:
                return code
            log.error("worker exited %d; restarting in %gs (restart %d)", code, delay, restarts)
            sleep(delay)
    except KeyboardInterrupt:
        if child is not None and child.poll() is None:
            child.terminate()
            child.wait(30)
        return ExitCode.INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
