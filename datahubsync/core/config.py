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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from datahubsync.core.errors import ConfigError
from datahubsync.core.layout import StateLayout

ENV_PREFIX = "DATAHUBSYNC_"
DEFAULT_LOCATIONS = (Path("/etc/datahubsync/config.yaml"), Path("config.yaml"))


def http_url(value: str | None, strip: bool = True) -> str | None:
    """The one check of an http(s) URL in the config (trailing slashes dropped when
    ``strip``: a base URL that paths are appended to)."""
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/") if value and strip else value


class Section(BaseModel):
    """A config section: unknown keys are errors, defaults are validated too."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


# For classes that only serve as parts of a composed section (the features' keys of
# serve: and fleet:, and core's own parts): their validators are never built alone,
# only inside the class they are mixed into (which says defer_build=False again).
PART = ConfigDict(extra="forbid", validate_default=True, defer_build=True)
COMPOSED = ConfigDict(extra="forbid", validate_default=True, defer_build=False)


class HubConfig(Section):
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


class S3Config(Section):
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


def check_networks(value: list[str] | None) -> list[str] | None:
    import ipaddress

    for item in value or []:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a network: {exc}") from None
    return value


class LoggingConfig(Section):
    """Log level and optional log file (reopened after logrotate moves it)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"] = (
        "INFO"
    )
    file: Path | None = None




class ServeCore(Section):
    """``serve:``: the HTTP server itself (the features add their keys to the section)."""

    model_config = PART

    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    workers: int | None = Field(None, ge=1)  # None: one per core
    timezone: str | None = None
    shutdown_timeout: float = Field(30, gt=0)
    max_request_bytes: int = Field(1024 * 1024, gt=0)
    header_timeout: float = Field(10, gt=0)  # a request's headers, from its first byte
    body_timeout: float = Field(30, gt=0)  # a request's body, once its headers are in
    keepalive_timeout: float = Field(15, gt=0)  # a connection with no request under way
    send_timeout: float = Field(60, gt=0)  # a picture send making no progress: dropped
    max_connections: int = Field(1024, ge=1)  # per worker process; beyond: 503 and closed
    api_tokens: list[str] = Field(default_factory=list)  # bearer tokens for the batch API
    # clients that need no token on the batch, picture push/call_back and fleet routes
    trusted_networks: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    trusted_proxies: list[str] = Field(default_factory=list)  # whose X-Forwarded-For counts

    @field_validator("trusted_networks", "trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return check_networks(value) or []


class ReportingConfig(Section):
    """``fleet:`` keys of every client: the run report sent to the hub when a command
    ends, and the node_exporter textfile metrics (the hub's keys are the fleet feature's)."""

    model_config = PART

    report: bool = True  # send a report to the hub when a run ends
    report_url: str | None = None  # null = hub.url (set it for hubs published as static files)
    token: str | None = None  # bearer for the report route, outside serve.trusted_networks
    host: str | None = None  # the name this host reports; null = its host name
    timeout: float = Field(3, gt=0)  # seconds; one try, then the report is kept for the next
    outbox_max: int = Field(50, ge=0)  # reports kept while the hub is unreachable
    metrics_file: Path | None = None  # node_exporter textfile metrics, e.g. .../datahubsync.prom
    service_report_every: float = Field(300, gt=0)  # pictures run / logs run: seconds between

    @field_validator("report_url")
    @classmethod
    def _report_url(cls, value: str | None) -> str | None:
        return http_url(value)


class CoreConfig(Section):
    """The sections core itself reads. The whole file's schema is this plus every
    feature's sections, composed in ``datahubsync.schema`` and passed to ``load_config``."""

    model_config = PART

    state_dir: Path | None = None
    hub: HubConfig = Field(default_factory=HubConfig)
    s3: S3Config = Field(default_factory=S3Config)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    serve: ServeCore = Field(default_factory=ServeCore)
    fleet: ReportingConfig = Field(default_factory=ReportingConfig)


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where it came from (for messages and relative paths)."""

    config: Any  # an instance of the schema given to load_config (every section)
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
    data: dict[str, Any], environ: Mapping[str, str], top_keys: set[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply ``DATAHUBSYNC_<SECTION>__<KEY>`` variables; returns data and path→variable."""
    applied: dict[str, str] = {}
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


def _resolve_paths(node: Any, base: Path) -> None:
    """Relative paths are relative to the config file's directory: every ``Path`` in
    every section, and the strings a section names in ``relative_strings`` (globs)."""

    def fix(path: Path) -> Path:
        path = path.expanduser()
        return path if path.is_absolute() else base / path

    if isinstance(node, (list, tuple)):
        for item in node:
            _resolve_paths(item, base)
        return
    if isinstance(node, dict):
        for item in node.values():
            _resolve_paths(item, base)
        return
    if not isinstance(node, Section):
        return
    strings = getattr(node, "relative_strings", ())
    for name in type(node).model_fields:
        value = getattr(node, name)
        if isinstance(value, Path):
            setattr(node, name, fix(value))
        elif isinstance(value, str) and name in strings:
            setattr(node, name, str(fix(Path(value))))
        else:
            _resolve_paths(value, base)


PathCheck = Callable[[Any, Path], "tuple[str, str] | None"]


def load_config(
    explicit: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None,
    schema: type[BaseModel] = CoreConfig, checks: Sequence[PathCheck] = (),
) -> LoadedConfig:
    """Find, parse, override and validate the configuration; ConfigError on any problem.

    ``schema``: the whole file's model (``datahubsync.schema.Config``; core alone
    knows only its own sections); ``checks``: the features' path checks, each
    ``(config, state_dir) -> (key, why) | None``, run after core's own.
    """
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
    data, overrides = _apply_overrides(data, env, set(schema.model_fields))
    try:
        config = schema.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"]) or "<top>"
        via = f" (from {overrides[path]})" if path in overrides else ""
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{label}: {path}{via}: {_describe(first)}{more}") from None
    base = source.resolve().parent if source else Path.cwd()
    _resolve_paths(config, base)
    loaded = LoadedConfig(config, source, overrides,
                          frozenset(k for k, v in data.items() if v is not None))
    problem = path_problem(loaded, checks)
    if problem:
        path, message = problem
        via = f" (from {overrides[path]})" if path in overrides else ""
        raise ConfigError(f"{label}: {path}{via}: {message}")
    return loaded


def inside(inner: Path, outer: Path) -> bool:
    """``inner`` is ``outer`` or below it (paths as given, not resolved)."""
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


def path_problem(loaded: LoadedConfig, checks: Sequence[PathCheck] = ()
                 ) -> tuple[str, str] | None:
    """The first path in the config that cannot work: (key path, why), or None.

    Checked at load so that a mistake is one line naming the key (exit 2), not a
    failure half way through a sync: a state_dir or log file that cannot be
    created; then each feature's ``checks`` (a dataset installed around the state
    directory, say).
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
    for check in checks:
        problem = check(config, state)
        if problem:
            return problem
    return None
