"""What one day's unit of work is made of: the protocol every job kind implements, and
the pieces they share (placeholders in templates, child processes, cancellation).

Kept apart from ``jobs`` (the registry of kinds) so a kind's module imports
these without importing the registry that imports it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from datahubsync.batch.progress import DayOutcome
from datahubsync.core.errors import ConfigError

log = logging.getLogger(__name__)
POLL = 0.2  # seconds between checks of a child process, a cancel request


class Cancelled(Exception):
    """The task was cancelled (or the process told to stop) during this day."""


class DayUnit(Protocol):
    """One day's work; returns its outcome, never raises for a failure of the day."""

    def run(self, day: dt.date, stop: threading.Event) -> DayOutcome: ...


def render(template: str, day: dt.date) -> str:
    """Fill ``{date}`` (``YYYY-MM-DD``) or ``{date:%Y%m%d}`` into one argument."""
    try:
        return template.format_map({"date": day})
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"bad placeholder in {template!r}: only {{date}} or "
                          f"{{date:FORMAT}} may appear ({exc})") from None


def render_argv(argv: list[str], day: dt.date) -> list[str]:
    return [render(arg, day) for arg in argv]


def tail(path: str, limit: int = 4096) -> str:
    """The last line of a (possibly large) output file, for an error message."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - limit))
        text = fh.read().decode("utf-8", "replace").strip()
    return text.splitlines()[-1] if text else ""


def run_child(argv: list[str], timeout: float, stop: threading.Event,
              env: Mapping[str, str] | None = None) -> tuple[int | None, str]:
    """Run a program with a deadline; stop it when ``stop`` is set.

    Returns (exit code or None when stopped/timed out, last line of stderr).
    Output goes to temp files, never to a pipe that could fill and block.
    """
    with tempfile.NamedTemporaryFile(prefix="datahubsync-batch-", suffix=".err") as err:
        try:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        except OSError as exc:
            return 127, f"cannot start {argv[0]}: {exc.strerror or exc}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                code = child.wait(POLL)
                return code, tail(err.name)
            except subprocess.TimeoutExpired:
                pass
            if stop.is_set() or time.monotonic() > deadline:
                stop_child(child)
                why = "stopped" if stop.is_set() else f"timed out after {timeout:g}s"
                return None, why


def stop_child(child: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds."""
    child.terminate()
    try:
        child.wait(grace)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


class CommandUnit:
    """``kind: command``: run an argv template per day; exit 0 is success."""

    def __init__(self, name: str, cfg: Any) -> None:
        self.name, self.cfg = name, cfg

    def run(self, day: dt.date, stop: threading.Event) -> DayOutcome:
        argv = render_argv(self.cfg.command, day)
        env = {**os.environ, **self.cfg.env, "DATAHUBSYNC_BATCH_DATE": day.isoformat()}
        code, last = run_child(argv, self.cfg.timeout, stop, env)
        if code is None and stop.is_set():
            return DayOutcome("cancelled", last)
        if code == 0:
            return DayOutcome("success")
        status = f"exit {code}" if code is not None else last
        return DayOutcome("failed", f"{argv[0]}: {status}{': ' + last if code and last else ''}")


