"""The pictures feature's config: ``pictures:`` (the worker) and the ``serve:`` keys of
the picture routes (``picture_roots``, the old TCP protocol)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from datahubsync.core.config import PART, Section, http_url
from datahubsync.core.db import check_store_url

_SQL_NAME = r"^[A-Za-z_][A-Za-z0-9_$#]*(\.[A-Za-z_][A-Za-z0-9_$#]*)?$"
_SEED_IMAGE_COLUMNS = [f"{kind}_IMAGE_PATH{i}" for kind in ("TARE", "GROSS") for i in range(1, 5)]


class OracleOptions(Section):
    """python-oracledb: thin mode (no Instant Client) unless ``lib_dir`` is set."""

    lib_dir: Path | None = None  # thick mode, initialised once per process; PATH is never touched


class PicturesConfig(Section):
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
    # pictures per POST /api/v1/pictures/bundle (http, our serve), or GETs pipelined on one
    # connection where the route is missing (the nginx front); 0 or 1: one GET at a time
    bundle_files: int = Field(32, ge=0, le=64)
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
        return http_url(value)

    @field_validator("image_columns")
    @classmethod
    def _columns(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(_SQL_NAME, name):
                raise ValueError(f"{name!r} is not a column name")
        return value


class PictureRoot(Section):
    """Client path prefix (as in the task table) → directory on this host, for ``/files``."""

    prefix: str = Field(min_length=1)  # e.g. 'D:\\pic' (either slash; case-insensitive drive)
    path: Path  # e.g. /srv/pic

    @field_validator("prefix")
    @classmethod
    def _absolute(cls, value: str) -> str:
        text = value.replace("\\", "/")
        if not (re.match(r"^[A-Za-z]:(/|$)", text) or text.startswith("/")) or "//" in text \
                or ".." in text.split("/"):
            raise ValueError("must be an absolute client path such as 'D:\\pic' or '/data/pic'")
        return value


class LegacyTcpConfig(Section):
    """The old one-file-per-connection picture protocol, for old clients."""

    host: str = "0.0.0.0"
    port: int = Field(5000, ge=0, le=65535)
    max_path_bytes: int = Field(4096, ge=16, le=65536)  # longer requests get the error frame
    read_timeout: float = Field(10, gt=0)  # seconds for the whole request to arrive
    idle_timeout: float = Field(60, gt=0)  # seconds a send may make no progress
    max_connections: int = Field(256, ge=1)  # per server process; beyond: error frame


class PicturesServeKeys(Section):
    """``serve:`` keys of ``/files``, the push API and the old TCP protocol."""

    model_config = PART

    picture_roots: list[PictureRoot] = Field(default_factory=list)  # GET /files/...; [] = off
    picture_stale_after: float = Field(86400, gt=0)  # doctor warns: no picture sent for this long
    # per serve process: copies of small pictures answered from memory (0 = off)
    picture_cache_bytes: int = Field(64 * 1024 * 1024, ge=0)
    picture_cache_file_bytes: int = Field(1024 * 1024, ge=0, le=1024 * 1024)  # larger: sendfile
    legacy_tcp: LegacyTcpConfig | None = None  # the old clients' TCP protocol; needs picture_roots

    @field_validator("legacy_tcp")
    @classmethod
    def _legacy_needs_roots(cls, value: Any, info: Any) -> Any:
        if value is not None and not info.data.get("picture_roots"):
            raise ValueError("needs serve.picture_roots (the files it may send)")
        return value
