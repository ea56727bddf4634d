"""The logs feature's config: ``logs:`` (the shipper) and ``serve.logs_ingest`` (the
endpoint it uploads to)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from datahubsync.core.config import PART, Section, check_networks, http_url
from datahubsync.core.db import check_store_url


class LogsIngestConfig(Section):
    """The IP ingest endpoint of ``serve`` (what ``datahubsync logs`` uploads to)."""

    path: str = Field("/api/v1/logs/ips", pattern=r"^/[A-Za-z0-9/_.-]*$")
    api_keys: list[str] = Field(default_factory=list)  # X-API-Key values; none: all get 401
    allowed_networks: list[str] | None = None  # sources allowed to send; None = any
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    max_records: int = Field(10_000, gt=0)
    store_url: str | None = None  # postgresql://...; None = SQLite in {state_dir}/logs

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        return check_store_url(value, ("postgresql", "postgres"))

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str] | None) -> list[str] | None:
        return check_networks(value)


class LogsConfig(Section):
    """``datahubsync logs``: ship IPs found in hourly sinkhole logs to the ingest endpoint."""

    log_dir: Path = Path("logs")
    pattern: str = "ramnit_*.log"
    api_endpoint: str | None = None  # e.g. http://hub:8080/api/v1/logs/ips
    # where the old uploader kept file_offsets.json / pending_upload_queue.json (taken once)
    legacy_state_dir: Path | None = None
    api_key: str | None = None  # secret: set DATAHUBSYNC_LOGS__API_KEY
    botnet_type: str = "ramnit"
    source_ip: str | None = None  # None: the address this host uses to reach the endpoint
    batch_size: int = Field(500, ge=1, le=10_000)
    min_upload_batch: int = Field(100, ge=1)  # `run` waits for this many (or the interval)
    force_upload_threshold: int = Field(5000, ge=1)  # upload at once from this many, mid-file
    upload_interval: float = Field(300, gt=0)
    stable_seconds: float = Field(300, ge=0)  # a past hour's file is final after this quiet
    max_retries: int = Field(3, ge=0)
    retry_delay: float = Field(30, ge=0)
    timeout: float = Field(30, gt=0)
    dedupe: Literal["global", "daily", "none"] = "global"
    # tokens (and their seen-state) remembered in memory, ~90 B each; the seen-set is on disk
    max_memory_ips: int = Field(300_000, ge=0)
    # Where addresses are looked for: None = any run of digits and dots (any line format).
    # For a known format, anchor it, e.g. 'from ([0-9][0-9.]{6,})' (group 1 = the address):
    # a literal prefix lets the regex engine skip ahead, ~5x the scan speed here.
    ip_regex: str | None = None
    # Processes that run the regex and the token memory beside the reader. None: one per
    # CPU (at most 4; none on one CPU); 0: all in the reader's own thread.
    scan_processes: int | None = Field(None, ge=0, le=64)
    timestamp_source: Literal["line", "file_hour"] = "line"
    raw_line_prefix_chars: int = Field(200, ge=0, le=4096)
    chunk_bytes: int = Field(1024 * 1024, ge=4096)
    max_line_bytes: int = Field(64 * 1024, ge=256)  # longer lines are skipped with a warning
    listing_ttl: float = Field(300, ge=0)
    health_pending_warning: int = Field(1000, ge=1)
    health_pending_severe: int = Field(5000, ge=1)
    health_queue_mb_warning: float = Field(10, gt=0)
    health_queue_mb_severe: float = Field(50, gt=0)

    @field_validator("api_endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return http_url(value, strip=False)

    @field_validator("ip_regex")
    @classmethod
    def _ip_regex(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            groups = re.compile(value.encode()).groups
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if groups > 1:
            raise ValueError("at most one group (the address)")
        return value


class LogsServeKeys(Section):
    """``serve:`` keys of the IP ingest endpoint."""

    model_config = PART

    logs_ingest: LogsIngestConfig = Field(default_factory=LogsIngestConfig)
