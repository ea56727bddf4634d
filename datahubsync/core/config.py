"""Configuration: one YAML file, environment overrides, validation at load.

Where the file is: ``--config``, else ``$DATAHUBSYNC_CONFIG``, else
``/etc/datahubsync/config.yaml``, else ``./config.yaml``; with none of them
the embedded defaults apply. Any value can be overridden with
``DATAHUBSYNC_<SECTION>__<KEY>`` (double underscore for nesting, a number
for a list index); values are read as YAML scalars, so ``300`` is a number.
Unknown keys are errors: a typo must not silently disable a feature. Relative
paths are taken relative to the config file's directory, so cron's working
directory does not matter.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from datahubsync.core.db import check_store_url
from datahubsync.core.errors import ConfigError
from datahubsync.core.layout import StateLayout

ENV_PREFIX = "DATAHUBSYNC_"
DEFAULT_LOCATIONS = (Path("/etc/datahubsync/config.yaml"), Path("config.yaml"))


def _http_url(value: str | None, strip: bool = True) -> str | None:
    """The one check of an http(s) URL in the config (trailing slashes dropped when
    ``strip``: a base URL that paths are appended to)."""
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/") if value and strip else value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class HubConfig(_Section):
    """Where the client finds its hub (``datahubsync serve``, the old hub, or a static tree)."""

    url: str | None = None
    timeout: float = Field(300, gt=0)
    connect_timeout: float = Field(10, gt=0)
    retries: int = Field(5, ge=1)
    timezone: str | None = None

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("s3://"):
            from datahubsync.core.s3url import parse_s3_url

            bucket, prefix = parse_s3_url(value)  # ValueError says what is wrong
            return f"s3://{bucket}/{prefix}".rstrip("/")
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http://, https:// or s3://")
        return value.rstrip("/") if value else value


class S3Config(_Section):
    """S3-compatible object storage: ``hub.url: s3://...`` and ``datasets publish --to``.

    Unset keys are taken from the AWS variables (AWS_ENDPOINT_URL_S3 /
    AWS_ENDPOINT_URL, AWS_REGION / AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID with
    AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN); without an endpoint, AWS itself.
    """

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:8333 (SeaweedFS, MinIO, Ceph)
    region: str | None = Field(None, pattern=r"^[a-z0-9-]{1,40}$")  # None: env, else us-east-1
    access_key_id: str | None = None  # None: AWS_ACCESS_KEY_ID (the whole set from the env)
    secret_access_key: str | None = None  # secret: DATAHUBSYNC_S3__SECRET_ACCESS_KEY
    session_token: str | None = None  # secret, temporary credentials only
    addressing_style: Literal["auto", "path", "virtual"] = "auto"  # auto: virtual on AWS

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value


class DatasetConfig(_Section):
    """One dataset this client keeps a copy of."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    local_dir: Path
    mode: Literal["swap", "overlay"] = "swap"
    keep_previous: int = Field(1, ge=0)


class SyncConfig(_Section):
    """How the client downloads and installs."""

    # The 08:15 sync must end before trading (09:15): on by default, cron and timer alike.
    max_time: float | None = Field(2700, gt=0)  # seconds for the whole sync; null = no limit
    deadline: str | None = Field(None, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")  # HH:MM
    min_rate: int = Field(1024, ge=0)  # bytes/s a download must keep up ... (0 = off)
    min_rate_window: float = Field(60, gt=0)  # ... over this many seconds, or it fails
    max_total_bytes: int = Field(64 * 1024**3, gt=0)
    max_ratio: float = Field(200.0, gt=1)
    fsync: bool = True
    lock_wait: float = Field(0, ge=0)
    delta: bool = True  # use the hub's deltas when it offers one from the installed version
    delta_max_share: float = Field(0.5, gt=0, le=1)  # else download the full package
    on_local_change: Literal["repair", "refuse"] = "repair"  # hand-edited local files


class LogsIngestConfig(_Section):
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
        return _check_networks(value)


class LogsConfig(_Section):
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
        return _http_url(value, strip=False)

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


_SQL_NAME = r"^[A-Za-z_][A-Za-z0-9_$#]*(\.[A-Za-z_][A-Za-z0-9_$#]*)?$"
_SEED_IMAGE_COLUMNS = [f"{kind}_IMAGE_PATH{i}" for kind in ("TARE", "GROSS") for i in range(1, 5)]


class OracleOptions(_Section):
    """python-oracledb: thin mode (no Instant Client) unless ``lib_dir`` is set."""

    lib_dir: Path | None = None  # thick mode, initialised once per process; PATH is never touched


class PicturesConfig(_Section):
    """``datahubsync pictures``: fetch every picture of every task, lose none."""

    source: Literal["sql", "push"] = "sql"
    database_url: str | None = None  # SQLAlchemy URL of the task table (source: sql)
    table: str = Field("jlyxz.PIC_MATCHTASK", pattern=_SQL_NAME)
    created_column: str = Field("CREATED_TIME", pattern=_SQL_NAME)
    id_column: str = Field("TASK_ID", pattern=_SQL_NAME)
    image_columns: list[str] = Field(default_factory=lambda: list(_SEED_IMAGE_COLUMNS),
                                     min_length=1)
    batch_size: int = Field(500, ge=1, le=100_000)  # rows per keyset page
    lookback_minutes: float = Field(10, ge=0)  # re-read so rows committed late are not skipped
    oracle_compat: Literal["11g"] | None = None  # 11g: ROWNUM paging instead of FETCH FIRST
    oracle: OracleOptions = Field(default_factory=OracleOptions)
    poll_interval: float = Field(300, gt=0)
    legacy_progress_file: Path | None = None  # the old client's sync_progress.json
    ledger_url: str | None = None  # postgresql://...; None = SQLite in {state_dir}/pictures

    @field_validator("ledger_url")
    @classmethod
    def _ledger_url(cls, value: str | None) -> str | None:
        return check_store_url(value)
    transport: Literal["http", "legacy-tcp"] = "http"
    server_url: str | None = None  # http://host:8080 (serve with picture_roots)
    token: str | None = None  # secret: set DATAHUBSYNC_PICTURES__TOKEN
    legacy_host: str | None = None  # legacy-tcp: the old server.py
    legacy_port: int = Field(5000, ge=1, le=65535)
    workers: int = Field(8, ge=1, le=256)
    timeout: float = Field(60, gt=0)  # seconds a transfer may make no progress
    max_picture_bytes: int = Field(64 * 1024**2, gt=0)  # a longer body is an error, not stored
    local_root: Path = Path("pictures")
    give_up_after: float = Field(7 * 86400, gt=0)  # a failing file is given up after this
    retry_initial: float = Field(60, gt=0)  # backoff of failed files: first delay, doubling
    retry_max: float = Field(3600, gt=0)
    missing_attempts: int = Field(3, ge=1)  # "not found" this many times: recorded missing
    process_command: list[str] | None = Field(None, min_length=1)  # argv template, no shell
    process_timeout: float = Field(600, gt=0)
    callback_url: str | None = None  # POSTed the processing result ("remote server 2")
    callback_headers: dict[str, str] = Field(default_factory=dict)  # e.g. Authorization
    retry_after: float = Field(1800, gt=0)  # a step not done this long after it was due
    stall_timeout: float = Field(7200, gt=0)  # no progress this long: exit so systemd restarts
    supervise_delay: float = Field(10, ge=0)  # --supervise: wait before restarting the worker
    max_push_bytes: int = Field(64 * 1024, gt=0)  # push API: body limit

    @field_validator("server_url", "callback_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("image_columns")
    @classmethod
    def _columns(cls, value: list[str]) -> list[str]:
        import re

        for name in value:
            if not re.match(_SQL_NAME, name):
                raise ValueError(f"{name!r} is not a column name")
        return value


class PictureRoot(_Section):
    """Client path prefix (as in the task table) → directory on this host, for ``/files``."""

    prefix: str = Field(min_length=1)  # e.g. 'D:\\pic' (either slash; case-insensitive drive)
    path: Path  # e.g. /srv/pic

    @field_validator("prefix")
    @classmethod
    def _absolute(cls, value: str) -> str:
        import re

        text = value.replace("\\", "/")
        if not (re.match(r"^[A-Za-z]:(/|$)", text) or text.startswith("/")) or "//" in text \
                or ".." in text.split("/"):
            raise ValueError("must be an absolute client path such as 'D:\\pic' or '/data/pic'")
        return value


class LegacyTcpConfig(_Section):
    """The old one-file-per-connection picture protocol, for old clients."""

    host: str = "0.0.0.0"
    port: int = Field(5000, ge=0, le=65535)
    max_path_bytes: int = Field(4096, ge=16, le=65536)  # longer requests get the error frame
    read_timeout: float = Field(10, gt=0)  # seconds for the whole request to arrive
    idle_timeout: float = Field(60, gt=0)  # seconds a send may make no progress
    max_connections: int = Field(256, ge=1)  # per server process; beyond: error frame


def _check_networks(value: list[str] | None) -> list[str] | None:
    import ipaddress

    for item in value or []:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a network: {exc}") from None
    return value


class ServeConfig(_Section):
    """The hub: what it serves and when it builds packages."""

    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    data_root: Path = Path("data")
    datasets: list[str] | None = None
    dataset_links_outside: bool = False  # package a dataset dir symlinked out of data_root
    cache_dir: Path | None = None
    check_interval: float = Field(600, gt=0)
    debounce: float = Field(60, ge=0)
    newer_ratio: float = Field(0.85, ge=0, le=1)
    fresh_window: float = Field(86400, ge=0)
    keep_packages: int = Field(2, ge=0)
    keep_deltas: int = Field(2, ge=0)  # deltas from this many previous versions (0 = none)
    max_delta_share: float = Field(0.5, gt=0, le=1)  # drop a delta larger than this share
    compress_level: int = Field(6, ge=0, le=9)
    compress_codec: Literal["zlib", "zlib-ng", "isal"] = "zlib-ng"  # same ZIP, faster deflate
    compress_threads: int | None = Field(None, ge=1)
    workers: int | None = Field(None, ge=1)  # None: one per core
    timezone: str | None = None
    shutdown_timeout: float = Field(30, gt=0)
    max_request_bytes: int = Field(1024 * 1024, gt=0)
    header_timeout: float = Field(10, gt=0)  # a request's headers, from its first byte
    body_timeout: float = Field(30, gt=0)  # a request's body, once its headers are in
    keepalive_timeout: float = Field(15, gt=0)  # a connection with no request under way
    max_connections: int = Field(1024, ge=1)  # per worker process; beyond: 503 and closed
    catalog_poll: float = Field(1.0, gt=0)
    api_tokens: list[str] = Field(default_factory=list)  # bearer tokens for the batch API
    # clients that need no token on the batch, picture push/call_back and fleet routes
    trusted_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    trusted_proxies: list[str] = Field(default_factory=list)  # whose X-Forwarded-For counts
    logs_ingest: LogsIngestConfig = Field(default_factory=LogsIngestConfig)
    picture_roots: list[PictureRoot] = Field(default_factory=list)  # GET /files/...; [] = off
    picture_stale_after: float = Field(86400, gt=0)  # doctor warns: no picture sent for this long
    legacy_tcp: LegacyTcpConfig | None = None  # the old clients' TCP protocol; needs picture_roots

    @field_validator("trusted_networks", "trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return _check_networks(value) or []

    @field_validator("legacy_tcp")
    @classmethod
    def _legacy_needs_roots(cls, value: Any, info: Any) -> Any:
        if value is not None and not info.data.get("picture_roots"):
            raise ValueError("needs serve.picture_roots (the files it may send)")
        return value


_JOB_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class PgCopySource(_Section):
    """Where a pg-copy job's rows come from: files per day, or a command per day."""

    glob: str | None = None  # e.g. /data/daily/{date}/*.csv or {date:%Y%m%d}
    command: list[str] | None = Field(None, min_length=1)  # argv, no shell; CSV on stdout
    missing: Literal["fail", "skip"] = "fail"  # a trading day without files

    @field_validator("command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value[0]:
            raise ValueError("the program name must not be empty")
        return value

    def model_post_init(self, _context: Any) -> None:
        if (self.glob is None) == (self.command is None):
            raise ValueError("set exactly one of glob or command")


class PgCopyJobConfig(_Section):
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


class CommandJobConfig(_Section):
    """Run a program once per day (argv template with {date}, no shell)."""

    kind: Literal["command"]
    command: list[str] = Field(min_length=1)
    timeout: float = Field(3600, gt=0)
    env: dict[str, str] = Field(default_factory=dict)
    target: str | None = None  # lock name; None = the job name


BatchJobConfig = Annotated[PgCopyJobConfig | CommandJobConfig, Field(discriminator="kind")]


class BatchConfig(_Section):
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
        import re

        for name in value:
            if not re.match(_JOB_NAME, name):
                raise ValueError(f"job name {name!r} must match {_JOB_NAME}")
        return value

    def model_post_init(self, _context: Any) -> None:
        if self.default_job is not None and self.default_job not in self.jobs:
            raise ValueError(f"default_job {self.default_job!r} is not one of jobs")


class LoggingConfig(_Section):
    """Log level and optional log file (reopened after logrotate moves it)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"] = (
        "INFO"
    )
    file: Path | None = None


class SmtpConfig(_Section):
    """Mail for alerts: plain SMTP, STARTTLS unless told not to, auth from the environment."""

    host: str
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    password_env: str = "DATAHUBSYNC_SMTP_PASSWORD"  # the variable holding the password
    sender: str = "datahubsync@localhost"
    to: list[str] = Field(min_length=1)
    timeout: float = Field(10, gt=0)


class WebhookConfig(_Section):
    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        return _http_url(value) or value


ALERT_RULES = ("dataset_late", "sync_failed", "host_silent", "pictures_given_up",
               "logs_severe", "batch_failed")


class AlertsConfig(_Section):
    """Alerts without Prometheus: a message when a condition starts and one when it
    clears, to every webhook (JSON POST, retried with backoff) and mail recipient."""

    rules: list[Literal["dataset_late", "sync_failed", "host_silent", "pictures_given_up",
                        "logs_severe", "batch_failed"]] = Field(
        default_factory=lambda: list(ALERT_RULES))
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    smtp: SmtpConfig | None = None
    min_interval: float = Field(3600, ge=0)  # seconds before the same alert is sent again
    check_interval: float = Field(60, gt=0)  # seconds between evaluations
    retries: int = Field(5, ge=1)


class FleetConfig(_Section):
    """Reports of every client run to the hub, and the hub's view of its fleet."""

    # clients
    report: bool = True  # send a report to the hub when a run ends
    report_url: str | None = None  # null = hub.url (set it for hubs published as static files)
    token: str | None = None  # bearer for the report route, outside serve.trusted_networks
    host: str | None = None  # the name this host reports; null = its host name
    timeout: float = Field(3, gt=0)  # seconds; one try, then the report is kept for the next
    outbox_max: int = Field(50, ge=0)  # reports kept while the hub is unreachable
    metrics_file: Path | None = None  # node_exporter textfile metrics, e.g. .../datahubsync.prom
    service_report_every: float = Field(300, gt=0)  # pictures run / logs run: seconds between
    # the hub
    store_url: str | None = None  # postgresql://...; null = SQLite in {state_dir}/serve
    retention_days: int = Field(30, ge=1)
    ready_by: str = Field("09:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")  # hub's zone
    silent_after: float = Field(93600, gt=0)  # seconds without a report: the host is silent
    expected_hosts: list[str] = Field(default_factory=list)  # shown red until they report
    # who may read the page and /api/v1/fleet without a token (the report route follows
    # serve.trusted_networks): loopback and the private ranges by default
    view_networks: list[str] = Field(default_factory=lambda: [
        "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
        "fc00::/7"])
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    @field_validator("report_url")
    @classmethod
    def _report_url(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("view_networks")
    @classmethod
    def _view_networks(cls, value: list[str]) -> list[str]:
        return _check_networks(value) or []

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        return check_store_url(value, ("postgresql", "postgres"))


class Config(_Section):
    """The whole configuration file."""

    state_dir: Path | None = None
    hub: HubConfig = Field(default_factory=HubConfig)
    s3: S3Config = Field(default_factory=S3Config)
    datasets: list[DatasetConfig] = Field(default_factory=list)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    logs: LogsConfig = Field(default_factory=LogsConfig)
    pictures: PicturesConfig = Field(default_factory=PicturesConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where it came from (for messages and relative paths)."""

    config: Config
    source: Path | None
    overrides: dict[str, str] = field(default_factory=dict)
    sections: frozenset[str] = frozenset()  # top-level keys the file or environment set

    def configured(self, section: str) -> bool:
        """Did the user configure ``section`` (not only its defaults)?"""
        return section in self.sections

    @property
    def state_dir(self) -> Path:
        return self.config.state_dir or default_state_dir()

    @property
    def layout(self) -> StateLayout:
        """Every path the tool keeps under ``state_dir``."""
        return StateLayout(self.state_dir)


def default_state_dir() -> Path:
    """``/var/lib/datahubsync`` for root, else the XDG state directory."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/datahubsync")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "datahubsync"


def find_config(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path | None:
    """The config file to read; an explicitly named file must exist."""
    named = explicit or environ.get("DATAHUBSYNC_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return path
    for candidate in DEFAULT_LOCATIONS:
        if candidate.is_file():
            return candidate
    return None


def _scalar(text: str, name: str = "") -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text
    except RecursionError:
        raise ConfigError(f"{name}: value nested too deeply") from None


def _apply_overrides(
    data: dict[str, Any], environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply ``DATAHUBSYNC_<SECTION>__<KEY>`` variables; returns data and path→variable."""
    applied: dict[str, str] = {}
    top_keys = set(Config.model_fields)
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        if parts[0] not in top_keys:
            if len(parts) > 1:
                raise ConfigError(f"{name}: unknown config section {parts[0]!r}")
            continue  # e.g. DATAHUBSYNC_CONFIG, not a key
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"{name}: no list item {part!r} to override")
                if last:
                    node[int(part)] = _scalar(environ[name], name)
                else:
                    node = node[int(part)]
                continue
            if last:
                node[part] = _scalar(environ[name], name)
            else:
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
        applied[".".join(parts)] = name
    return data, applied


_SECRET_WORDS = ("secret", "token", "password", "api_key")


def _describe(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    value = error.get("input")
    where = ".".join(str(part) for part in error.get("loc") or ())
    if any(word in where for word in _SECRET_WORDS):
        return message  # never echo what may be a secret
    if not isinstance(value, (dict, list)) and kind != "missing":
        message += f" (got {value!r})"
    return message


def _resolve_paths(config: Config, base: Path) -> Config:
    """Relative paths are relative to the config file's directory."""

    def fix(path: Path | None) -> Path | None:
        if path is None:
            return None
        path = path.expanduser()
        return path if path.is_absolute() else base / path

    config.state_dir = fix(config.state_dir)
    config.logging.file = fix(config.logging.file)
    config.serve.data_root = fix(config.serve.data_root) or config.serve.data_root
    config.serve.cache_dir = fix(config.serve.cache_dir)
    for root in config.serve.picture_roots:
        root.path = fix(root.path) or root.path
    config.batch.calendar = fix(config.batch.calendar)
    config.logs.log_dir = fix(config.logs.log_dir) or config.logs.log_dir
    config.logs.legacy_state_dir = fix(config.logs.legacy_state_dir)
    pics = config.pictures
    pics.local_root = fix(pics.local_root) or pics.local_root
    pics.legacy_progress_file = fix(pics.legacy_progress_file)
    pics.oracle.lib_dir = fix(pics.oracle.lib_dir)
    for job in config.batch.jobs.values():
        source = getattr(job, "source", None)
        if source is not None and source.glob is not None:
            source.glob = str(fix(Path(source.glob)))
    for dataset in config.datasets:
        dataset.local_dir = fix(dataset.local_dir) or dataset.local_dir
    return config


def load_config(
    explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Find, parse, override and validate the configuration; ConfigError on any problem."""
    env = os.environ if environ is None else environ
    source = find_config(explicit, env)
    label = str(source) if source else "<defaults>"
    data: Any = {}
    if source is not None:
        try:
            data = yaml.safe_load(source.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{label}:{where}: invalid YAML: {problem}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{label}: cannot read: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{label}: invalid YAML: nested too deeply") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{label}: top level must be a mapping of sections")
    data, overrides = _apply_overrides(data, env)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"]) or "<top>"
        via = f" (from {overrides[path]})" if path in overrides else ""
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{label}: {path}{via}: {_describe(first)}{more}") from None
    base = source.resolve().parent if source else Path.cwd()
    loaded = LoadedConfig(_resolve_paths(config, base), source, overrides,
                          frozenset(k for k, v in data.items() if v is not None))
    problem = path_problem(loaded)
    if problem:
        path, message = problem
        via = f" (from {overrides[path]})" if path in overrides else ""
        raise ConfigError(f"{label}: {path}{via}: {message}")
    return loaded


def _inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _where_it_cannot_be(path: Path, kind: str) -> str | None:
    """Why ``path`` cannot be a ``kind`` ("directory" or "file") we create or write."""
    if path.exists():
        if kind == "directory" and not path.is_dir():
            return f"{path} exists and is not a directory"
        if kind == "file" and path.is_dir():
            return f"{path} is a directory, not a file"
        return None
    ancestor = path.parent
    while not ancestor.exists() and ancestor.parent != ancestor:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{path} cannot be created: {ancestor} is not a directory"
    return None


def path_problem(loaded: LoadedConfig) -> tuple[str, str] | None:
    """The first path in the config that cannot work: (key path, why), or None.

    Checked at load so that a mistake is one line naming the key (exit 2), not a
    failure half way through a sync: a state_dir or log file that cannot be
    created, two datasets sharing a name or a directory, a dataset installed
    over ``/`` or around the state directory (a swap would move the state away).
    """
    config = loaded.config
    state = loaded.state_dir.absolute()
    why = _where_it_cannot_be(state, "directory")
    if why:
        return "state_dir", why
    if config.logging.file is not None:
        why = _where_it_cannot_be(config.logging.file, "file")
        if why:
            return "logging.file", why
    names: dict[str, int] = {}
    dirs: dict[Path, int] = {}
    for n, ds in enumerate(config.datasets):
        where = f"datasets.{n}"
        if ds.name in names:
            return f"{where}.name", f"{ds.name!r} is also datasets.{names[ds.name]}"
        names[ds.name] = n
        local = Path(os.path.abspath(ds.local_dir))
        if local == Path(local.anchor):
            return f"{where}.local_dir", f"{local} is the root of the filesystem"
        for other, m in dirs.items():
            if _inside(local, other) or _inside(other, local):
                return (f"{where}.local_dir", f"{local} overlaps datasets.{m}.local_dir "
                        f"{other}")
        dirs[local] = n
        if _inside(state, local):
            return f"{where}.local_dir", (f"{local} holds the state directory {state}; an "
                                          "install would swap it away")
    return None
