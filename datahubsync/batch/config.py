"""The batch feature's config: ``batch:`` (date-range jobs and how they are locked)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from datahubsync.core.config import Section

_JOB_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class PgCopySource(Section):
    """Where a pg-copy job's rows come from: files per day, or a command per day."""

    glob: str | None = None  # e.g. /data/daily/{date}/*.csv or {date:%Y%m%d}
    command: list[str] | None = Field(None, min_length=1)  # argv, no shell; CSV on stdout
    missing: Literal["fail", "skip"] = "fail"  # a trading day without files
    relative_strings: ClassVar[tuple[str, ...]] = ("glob",)  # relative to the config file

    @field_validator("command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value[0]:
            raise ValueError("the program name must not be empty")
        return value

    def model_post_init(self, _context: Any) -> None:
        if (self.glob is None) == (self.command is None):
            raise ValueError("set exactly one of glob or command")


class PgCopyJobConfig(Section):
    """Load one day's CSV rows into a PostgreSQL table with COPY, replacing that day."""

    kind: Literal["pg-copy"]
    database_url: str  # postgresql://user@host/db (postgresql+psycopg:// accepted)
    table: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
    date_column: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$]*$")
    columns: list[str] | None = None  # target columns in CSV order; None = the CSV header
    header: bool = True
    delimiter: str = Field(",", min_length=1, max_length=1)
    encoding: str = "UTF8"
    source: PgCopySource
    verify_dates: bool = True  # fail a day whose rows carry another date
    timeout: float = Field(3600, gt=0)  # seconds per day
    target: str | None = None  # lock name; None = database + table


class CommandJobConfig(Section):
    """Run a program once per day (argv template with {date}, no shell)."""

    kind: Literal["command"]
    command: list[str] = Field(min_length=1)
    timeout: float = Field(3600, gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    target: str | None = None  # lock name; None = the job name


BatchJobConfig = Annotated[PgCopyJobConfig | CommandJobConfig, Field(discriminator="kind")]


class BatchConfig(Section):
    """Date-range jobs (`datahubsync batch`, and the batch API of `serve`)."""

    jobs: dict[str, BatchJobConfig] = Field(default_factory=dict)
    default_job: str | None = None  # the job the API runs when a request names none
    calendar: Path | None = None  # trading days, one YYYY-MM-DD per line; None = Mon-Fri
    lock: Literal["file", "postgres"] = "file"
    lock_url: str | None = None  # for lock: postgres; None = the job's database_url
    workers: int = Field(1, ge=1, le=64)  # days loaded at the same time
    max_days: int = Field(366, ge=1)  # longest range one request may ask for
    keep_history: int = Field(200, ge=1)  # progress files kept

    @field_validator("jobs")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.match(_JOB_NAME, name):
                raise ValueError(f"job name {name!r} must match {_JOB_NAME}")
        return value

    def model_post_init(self, _context: Any) -> None:
        if self.default_job is not None and self.default_job not in self.jobs:
            raise ValueError(f"default_job {self.default_job!r} is not one of jobs")
