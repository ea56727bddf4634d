"""Exit codes and the exception classes that carry them.

Every failure a user can see maps to one of these codes, in one place, so
cron, systemd and monitoring can tell a retryable failure from a fatal one.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit statuses (see README "Exit codes")."""

    OK = 0
    PARTIAL = 1  # some items failed, the others were done
    USAGE = 2  # bad usage or configuration
    SOFTWARE = 70  # unexpected internal error (EX_SOFTWARE)
    TEMPFAIL = 75  # locked or temporary failure (EX_TEMPFAIL)
    INTERRUPTED = 130


EXIT_STATUS_HELP = (
    "\b\nExit status:\n"
    "  0   success\n"
    "  1   some items failed (the others were done)\n"
    "  2   usage or configuration error\n"
    "  70  unexpected internal error\n"
    "  75  locked by another run, or temporary failure\n"
    "  130 interrupted"
)


class DatahubsyncError(Exception):
    """Base of every error we expect; its message is shown as one line."""

    exit_code: ExitCode = ExitCode.PARTIAL


class ConfigError(DatahubsyncError):
    """The configuration file or an override is missing or invalid."""

    exit_code = ExitCode.USAGE


class UsageError(DatahubsyncError):
    """The command line asks for something that cannot be done."""

    exit_code = ExitCode.USAGE


class LockedError(DatahubsyncError):
    """Another run holds the lock."""

    exit_code = ExitCode.TEMPFAIL


class TempFailError(DatahubsyncError):
    """A temporary failure: retrying later may succeed."""

    exit_code = ExitCode.TEMPFAIL


class NetworkError(DatahubsyncError):
    """A remote peer could not be reached or answered badly."""


class IntegrityError(DatahubsyncError):
    """Downloaded data does not match what the hub announced."""


class UnsafeArchiveError(DatahubsyncError):
    """An archive member would escape its target or exceed the limits."""


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """One readable line for a requests/urllib3 error: the innermost cause.

    Their messages nest causes as tuple reprs; a log line or a ``--json``
    message should say "ConnectionError: [Errno 111] Connection refused".
    """
    seen: BaseException = exc
    while True:
        inner = next((a for a in seen.args if isinstance(a, BaseException)), None)
        inner = inner or getattr(seen, "reason", None) or seen.__cause__
        if not isinstance(inner, BaseException) or inner is seen:
            break
        seen = inner
    text = str(seen) if seen is exc else f"{exc.__class__.__name__}: {seen}"
    return text if len(text) < limit else text[:limit] + "…"
