"""Database plumbing shared by every store: URL checks and "the store is down".

A store that cannot be reached is not the client's fault: ``serve`` answers
503 (with Retry-After) instead of 500, and a client retries later.
"""

from __future__ import annotations

import sqlite3
import sys

STORE_SCHEMES = ("sqlite", "postgresql", "postgres")


def check_store_url(value: str | None, schemes: tuple[str, ...] = STORE_SCHEMES) -> str | None:
    """A config validator: ``value`` must be a URL of one of ``schemes`` (``+driver`` allowed)."""
    if value is None:
        return None
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.split("+", 1)[0].lower() not in schemes or not rest:
        raise ValueError(f"expected a URL such as postgresql://user@host/db or "
                         f"sqlite:////path/file.db (schemes: {', '.join(schemes)})")
    return value


def unavailable(exc: BaseException) -> bool:
    """Is ``exc`` a store that is down, locked or unreachable (retry later), not a bug?"""
    if isinstance(exc, sqlite3.OperationalError):
        return True
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, (psycopg.OperationalError,
                                                psycopg.InterfaceError)):
        return True
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if sa_exc is not None and isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError,
                                               sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return True
    return False
