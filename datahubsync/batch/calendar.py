"""Which days of a range are trading days.

A calendar file lists trading days, one ``YYYY-MM-DD`` per line (``#``
comments and blank lines allowed). Without one, Monday to Friday are trading
days. A non-trading day is *skipped*, never failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from datahubsync.core.errors import ConfigError, UsageError


def parse_day(text: str, field: str = "date") -> dt.date:
    """A ``YYYY-MM-DD`` date; UsageError naming ``field`` otherwise."""
    try:
        if len(text) != 10:
            raise ValueError
        return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        raise UsageError(f"{field}: expected a date as YYYY-MM-DD, got {text!r}") from None


def days_between(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    """Every day from ``start`` to ``end``, both included."""
    day = start
    while day <= end:
        yield day
        day += dt.timedelta(days=1)


@dataclass(frozen=True)
class TradingCalendar:
    """Trading days from a file, or weekdays when ``days`` is None."""

    days: frozenset[dt.date] | None = None
    source: str = "weekdays"

    def is_trading_day(self, day: dt.date) -> bool:
        if self.days is None:
            return day.weekday() < 5
        return day in self.days

    def covers(self, start: dt.date, end: dt.date) -> bool:
        """Whether the file says anything about the range (else it is probably stale)."""
        if self.days is None:
            return True
        return any(start <= d <= end for d in self.days)


def load_calendar(path: Path | None) -> TradingCalendar:
    """Read a calendar file; ConfigError with the line number on a bad line."""
    if path is None:
        return TradingCalendar()
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the calendar: {exc.strerror or exc}") from None
    days = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            days.add(dt.date.fromisoformat(entry))
        except ValueError:
            raise ConfigError(f"{path}: line {number}: not a date YYYY-MM-DD: {entry!r}") from None
    return TradingCalendar(frozenset(days), str(path))
