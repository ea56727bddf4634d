"""Hub timestamps: local ISO-8601 strings, compared as instants.

The existing hub sends naive local time (``2026-11-23T19:31:54.791098``);
ours adds the offset. A naive value is read in the hub's zone.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from datahubsync.core.errors import ConfigError


def zone(name: str | None) -> dt.tzinfo:
    """The named IANA zone, or this machine's local zone when ``name`` is empty."""
    if not name:
        local = dt.datetime.now().astimezone().tzinfo
        assert local is not None
        return local
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"unknown time zone {name!r}: {exc}") from None


def parse_hub_time(value: str, tz: dt.tzinfo) -> dt.datetime:
    """Parse a hub ``last_updated`` into an aware datetime (naive → ``tz``)."""
    parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed


def format_hub_time(moment: dt.datetime, tz: dt.tzinfo) -> str:
    """Local time in the hub's shape plus the offset; microseconds only when non-zero."""
    local = moment.astimezone(tz)
    return local.isoformat(timespec="microseconds" if local.microsecond else "seconds")


def from_timestamp_ns(ns: int, tz: dt.tzinfo) -> dt.datetime:
    """An aware datetime in ``tz`` from nanoseconds since the epoch (µs precision)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return dt.datetime.fromtimestamp(seconds, tz) + dt.timedelta(microseconds=rest // 1000)


def show_time(value: object, empty: str = "never") -> str:
    """The one way human output shows a moment: ``2026-12-01 08:15:03+08:00`` in this host's
    zone, from an aware datetime, an ISO-8601 string (``+0000`` or ``+00:00``) or epoch
    seconds; ``empty`` for None. JSON output keeps the value as stored."""
    if value is None or value == "":
        return empty
    moment: dt.datetime | None = None
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        moment = dt.datetime.fromtimestamp(float(value), dt.UTC)
    elif isinstance(value, str):
        text = value.strip()
        try:
            moment = dt.datetime.fromtimestamp(float(text), dt.UTC)
        except ValueError:
            try:
                moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return text
    if moment is None:
        return str(value)
    if moment.tzinfo is None:
        return moment.isoformat(sep=" ", timespec="seconds")
    return moment.astimezone().isoformat(sep=" ", timespec="seconds")


def show_value(value: object, empty: str = "-") -> str:
    """An empty value in human output: ``-``, never Python's ``None``."""
    return empty if value is None else str(value)


def iso_time(value: object) -> str | None:
    """The one way documents (``--json``, reports) carry a moment: ISO-8601 with the
    offset, seconds precision, in this host's zone; from epoch seconds or an ISO string
    (``+0000`` or ``+00:00``); None stays None."""
    if value is None or value == "":
        return None
    shown = show_time(value, "")
    return shown.replace(" ", "T", 1) if shown else None
