"""Job kinds: what one day's unit of work is, for each ``kind`` in ``batch.jobs``.

The registry is open: a new kind (``pictures-backfill``, ``logs-replay``) adds
its config model and one entry in ``JOB_KINDS``; the runner, progress,
locking, API and CLI need no change.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from datahubsync.batch.pgcopy import PgCopyUnit, target_name
from datahubsync.batch.units import CommandUnit, DayUnit, render
from datahubsync.core.errors import ConfigError


@dataclass(frozen=True)
class JobKind:
    """How to build a job's day unit and which target it locks."""

    build: Callable[[str, Any], DayUnit]
    target: Callable[[str, Any], str]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "target"


def _command_target(name: str, cfg: Any) -> str:
    return _safe(cfg.target or f"command-{name}")


def _build_command(name: str, cfg: Any) -> DayUnit:
    return CommandUnit(name, cfg)


def _pg_target(name: str, cfg: Any) -> str:
    return _safe(cfg.target or target_name(cfg.database_url, cfg.table))


def _build_pg_copy(name: str, cfg: Any) -> DayUnit:
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
