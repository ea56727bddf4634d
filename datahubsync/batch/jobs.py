"""Job kinds: what one day's unit of work is, for each ``kind`` in ``batch.jobs``.

The registry is open: a new kind (``pictures-backfill``, ``logs-replay``) adds
its config model in ``core.config`` and one entry in ``JOB_KINDS``; the runner,
progress, locking, API and CLI need no change.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
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


@dataclass(frozen=True)
class JobKind:
    """How to build a job's day unit and which target it locks."""

    build: Callable[[str, Any], DayUnit]
    target: Callable[[str, Any], str]


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


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "target"


def _command_target(name: str, cfg: Any) -> str:
    return _safe(cfg.target or f"command-{name}")


def _build_command(name: str, cfg: Any) -> DayUnit:
    return CommandUnit(name, cfg)


def _pg_target(name: str, cfg: Any) -> str:
    from datahubsync.batch.pgcopy import target_name

    return _safe(cfg.target or target_name(cfg.database_url, cfg.table))


def _build_pg_copy(name: str, cfg: Any) -> DayUnit:
    from datahubsync.batch.pgcopy import PgCopyUnit

    return PgCopyUnit(name, cfg)


JOB_KINDS: Mapping[str, JobKind] = MappingProxyType({
    "command": JobKind(_build_command, _command_target),
    "pg-copy": JobKind(_build_pg_copy, _pg_target),
})


def check_templates(name: str, cfg: Any) -> None:
    """Fail at once (ConfigError, exit 2) on a bad placeholder, not on every day.

    A literal brace in an argument is written twice: ``{{`` and ``}}``.
    """
    source = getattr(cfg, "source", None)
    templates = list(getattr(cfg, "command", None) or [])
    if source is not None:
        templates += [source.glob] if source.glob else list(source.command or [])
    for template in templates:
        try:
            render(template, dt.date(2000, 1, 1))
        except ConfigError as exc:
            raise ConfigError(f"batch.jobs.{name}: {exc}; write a literal brace as {{{{ or "
                              "}}") from None


def kind_of(cfg: Any) -> JobKind:
    try:
        return JOB_KINDS[cfg.kind]
    except KeyError:
        raise ConfigError(f"job kind {cfg.kind!r} is not supported by this version") from None
