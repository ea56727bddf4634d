"""``datasets sync``: bring every configured dataset up to the hub's version.

Each dataset is independent: one failing does not stop the others. State
is written only after a successful install. Works against ``serve``, the
existing hub (no sha256/etag, naive timestamps) and a static published tree.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from datahubsync.core.config import LoadedConfig
from datahubsync.core.cpus import usable_cpus
from datahubsync.core.errors import (
    ConfigError,
    DatahubsyncError,
    TempFailError,
    UsageError,
    describe_error,
)
from datahubsync.core.fsutil import free_bytes
from datahubsync.core.http import NotJson, RetryPolicy, get_json
from datahubsync.core.locking import hold_lock
from datahubsync.core.progress import NullProgress, Progress
from datahubsync.core.timeutil import parse_hub_time, zone
from datahubsync.datasets.archive import ExtractLimits
from datahubsync.datasets.catalog import entry_problem
from datahubsync.datasets.config import DatasetConfig
from datahubsync.datasets.download import PackageChanged, RemotePackage, discard_part, download
from datahubsync.datasets.hubaccess import hub_access
from datahubsync.datasets.install import InstallRequest, install, recover
from datahubsync.datasets.state import ClientState, InstalledVersion

log = logging.getLogger(__name__)


@dataclass
class DatasetResult:
    """What happened to one dataset in one run (the ``--json`` document's item)."""

    name: str
    status: str  # up_to_date | installed | would_install | skipped | failed
    remote_last_updated: str | None = None
    local_last_updated: str | None = None
    bytes_downloaded: int = 0
    resumed_from: int = 0
    package_size: int | None = None
    seconds: float = 0.0
    message: str = ""
    method: str | None = None  # full | delta (for installs)
    files_added: int = 0
    files_changed: int = 0
    files_appended: int = 0
    files_deleted: int = 0
    delta_fallback: str = ""  # why a delta was not used, when one was offered

    @property
    def failed(self) -> bool:
        return self.status == "failed"


@dataclass
class SyncOptions:
    names: Sequence[str] = ()
    force: bool = False
    dry_run: bool = False
    max_time: float | None = None
    progress: Progress = field(default_factory=NullProgress)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)


def hub_catalog(loaded: LoadedConfig, session: requests.Session,
                policy: RetryPolicy) -> dict[str, dict[str, Any]]:
    """The hub's ``/api/datasets``, by dataset name."""
    hub = loaded.config.hub
    if not hub.url:
        raise ConfigError(f"{loaded.source or '<defaults>'}: hub.url: required to sync")
    url = hub_access(loaded).url("api/datasets")
    try:
        document = get_json(session, url, (hub.connect_timeout, hub.timeout), policy)
    except requests.HTTPError as exc:
        raise TempFailError(f"hub {url} answered {exc.response.status_code}") from None
    except (requests.RequestException, ConnectionError, TimeoutError) as exc:
        raise TempFailError(f"hub {url} unreachable: {describe_error(exc)}") from None
    except NotJson as exc:
        raise ConfigError(f"hub.url: {hub.url} is not a datahubsync hub: {exc}") from None
    except ValueError as exc:  # BadJson, BodyTooLarge: the hub is there but broken
        raise TempFailError(f"hub {url} sent an unusable catalog: {exc}") from None
    items = document.get("datasets") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"hub.url: {hub.url} is not a datahubsync hub: its /api/datasets "
                          "has no 'datasets' list")
    return {d["name"]: d for d in items
            if isinstance(d, dict) and isinstance(d.get("name"), str)}


def select(loaded: LoadedConfig, names: Sequence[str]) -> list[DatasetConfig]:
    configured = loaded.config.datasets
    if not names:
        return list(configured)
    known = {d.name: d for d in configured}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(f"not configured: {', '.join(unknown)} (configured: "
                         f"{', '.join(known) or 'none'})")
    return [known[n] for n in names]


def needs_update(remote: str | None, local: str | None, tz: dt.tzinfo) -> bool:
    """Compare data versions as instants; an unreadable value means "update"."""
    if remote is None:
        return False
    if local is None:
        return True
    try:
        return parse_hub_time(remote, tz) > parse_hub_time(local, tz)
    except ValueError:
        return remote != local


def seconds_left(loaded: LoadedConfig, opts: SyncOptions) -> float | None:
    """How long this sync may take: ``--max-time`` or ``sync.max_time``, and no later than
    ``sync.deadline`` (HH:MM today in the hub's zone; a deadline already past when the
    sync starts, a run by hand in the afternoon, is not applied)."""
    cfg = loaded.config.sync
    limits = [t for t in (opts.max_time or cfg.max_time,) if t]
    if cfg.deadline:
        now = opts.now().astimezone(zone(loaded.config.hub.timezone))
        hour, minute = (int(x) for x in cfg.deadline.split(":"))
        until = (now.replace(hour=hour, minute=minute, second=0, microsecond=0)
                 - now).total_seconds()
        if until > 0:
            limits.append(until)
        else:
            log.info("sync.deadline %s has passed today; only sync.max_time applies",
                     cfg.deadline)
    return min(limits) if limits else None


def sync(loaded: LoadedConfig, opts: SyncOptions) -> list[DatasetResult]:
    """Sync the selected datasets; returns one result per dataset."""
    datasets = select(loaded, opts.names)
    if not datasets:
        raise ConfigError(f"{loaded.source or '<defaults>'}: datasets: none configured")
    state = ClientState(loaded.state_dir)
    max_time = seconds_left(loaded, opts)
    deadline = opts.clock() + max_time if max_time is not None else None
    policy = RetryPolicy(attempts=loaded.config.hub.retries, sleep=opts.sleep,
                         deadline=max_time)
    with hold_lock(state.state_dir / "datasets.lock", loaded.config.sync.lock_wait):
        for ds in datasets:
            recover(state, ds.name)
        with hub_access(loaded).session() as session:
            catalog = hub_catalog(loaded, session, policy)
            return [_sync_one(loaded, state, session, catalog, ds, opts, policy, deadline)
                    for ds in datasets]


def _sync_one(loaded: LoadedConfig, state: ClientState, session: requests.Session,
              catalog: dict[str, dict[str, Any]], ds: DatasetConfig, opts: SyncOptions,
              policy: RetryPolicy, deadline: float | None) -> DatasetResult:
    started = opts.clock()
    tz = zone(loaded.config.hub.timezone)
    local = state.last_sync().get(ds.name)
    result = DatasetResult(ds.name, "failed", local_last_updated=local)
    try:
        for attempt in range(2):
            entry = catalog.get(ds.name)
            if entry is None:
                raise DatahubsyncError(f"{ds.name}: the hub does not offer this dataset")
            problem = entry_problem(entry, tz, opts.now())
            if problem:
                raise DatahubsyncError(f"{ds.name}: the hub's catalog entry is unusable: "
                                       f"{problem}")
            result.remote_last_updated = entry.get("last_updated")
            result.package_size = entry.get("package_size")
            if not entry.get("package_ready", True):
                raise DatahubsyncError(f"{ds.name}: the hub has no package ready yet")
            skip = state.record(ds.name).skip_last_updated
            if not opts.force and skip and skip == result.remote_last_updated:
                result.status = "skipped"
                result.message = "rolled back from this version; waiting for a newer one"
                break
            if not opts.force and ds.local_dir.exists() and not needs_update(
                    result.remote_last_updated, local, tz):
                result.status = "up_to_date"
                break
            if opts.dry_run:
                result.status = "would_install"
                break
            try:
                _download_and_install(loaded, state, session, entry, ds, opts, policy,
                                      deadline, result)
            except PackageChanged as exc:
                if attempt:
                    raise
                log.warning("%s; reading the hub's catalog again", exc)
                catalog.update(hub_catalog(loaded, session, policy))
                continue
            break
    except DatahubsyncError as exc:
        result.status, result.message = "failed", str(exc)
    except (requests.RequestException, ConnectionError, TimeoutError) as exc:
        result.status, result.message = "failed", f"{ds.name}: network: {describe_error(exc)}"
    except OSError as exc:
        result.status, result.message = "failed", f"{ds.name}: {exc}"
    except Exception as exc:  # noqa: BLE001 - one dataset's surprise never stops the others
        log.debug("%s: unexpected error", ds.name, exc_info=True)
        result.status = "failed"
        result.message = (f"{ds.name}: internal error: {type(exc).__name__}: {exc} (run with "
                          "--log-level debug for details)")
    result.seconds = round(opts.clock() - started, 3)
    if result.failed:
        log.error("%s", result.message)
    else:
        log.info("%s: %s", ds.name, result.status.replace("_", " "))
    return result


def _download_and_install(loaded: LoadedConfig, state: ClientState, session: requests.Session,
                          entry: dict[str, Any], ds: DatasetConfig, opts: SyncOptions,
                          policy: RetryPolicy, deadline: float | None,
                          result: DatasetResult) -> None:
    """A delta when the hub offers one from our version and it applies cleanly, else full."""
    delta = _usable_delta(loaded, state, entry, ds, opts, result)
    if delta is not None:
        from datahubsync.datasets.delta_apply import LocalChanged
        from datahubsync.datasets.delta_client import install_delta

        try:
            install_delta(loaded, state, session, entry, delta, ds, opts.progress, policy,
                          deadline, opts.clock, result)
            return
        except LocalChanged as exc:
            if loaded.config.sync.on_local_change == "refuse":
                raise DatahubsyncError(f"{ds.name}: {exc}; not repaired (sync.on_local_change:"
                                       " refuse)") from None
            result.delta_fallback = str(exc)
            log.warning("%s: %s; repairing from the full package", ds.name, exc)
        except PackageChanged:
            raise
        except (DatahubsyncError, requests.RequestException, OSError, ValueError,
                KeyError, TypeError) as exc:
            result.delta_fallback = f"{type(exc).__name__}: {exc}"
            log.warning("%s: delta not applied (%s); downloading the full package", ds.name,
                        result.delta_fallback)
    _install_full(loaded, state, session, entry, ds, opts, policy, deadline, result)


def _usable_delta(loaded: LoadedConfig, state: ClientState, entry: dict[str, Any],
                  ds: DatasetConfig, opts: SyncOptions,
                  result: DatasetResult) -> dict[str, Any] | None:
    """The hub's delta from the version installed here, if it is worth using."""
    sync_cfg = loaded.config.sync
    if not sync_cfg.delta or opts.force or ds.mode != "swap" or not ds.local_dir.is_dir():
        return None
    current = state.record(ds.name).current
    deltas = entry.get("deltas")
    if current is None or not current.version or not isinstance(deltas, list):
        return None
    if not entry.get("manifest"):
        return None
    for delta in deltas:
        if isinstance(delta, dict) and delta.get("from") == current.version:
            size, full = delta.get("size"), entry.get("package_size")
            if isinstance(size, int) and isinstance(full, int) and full > 0 \
                    and size > sync_cfg.delta_max_share * full:
                result.delta_fallback = (f"the delta ({size} bytes) is over "
                                         f"sync.delta_max_share of the package ({full} bytes)")
                log.info("%s: %s; full download", ds.name, result.delta_fallback)
                return None
            return delta
    return None


def _install_full(loaded: LoadedConfig, state: ClientState, session: requests.Session,
                  entry: dict[str, Any], ds: DatasetConfig, opts: SyncOptions,
                  policy: RetryPolicy, deadline: float | None, result: DatasetResult) -> None:
    hub = loaded.config.hub
    size = entry.get("package_size")
    size = int(size) if isinstance(size, int) and size > 0 else None
    remote = RemotePackage(
        name=ds.name, url=hub_access(loaded).url(package_path(entry, ds.name)), size=size,
        sha256=entry.get("sha256") or None, etag=entry.get("etag") or None,
        last_updated=entry.get("last_updated"),
    )
    part = state.part_path(ds.name)
    _check_space(part, ds, size, entry.get("total_size"))
    done = download(session, remote, part, connect_timeout=hub.connect_timeout,
                    read_timeout=hub.timeout, policy=policy, progress=opts.progress,
                    deadline=deadline, clock=opts.clock,
                    max_bytes=loaded.config.sync.max_total_bytes,
                    min_rate=loaded.config.sync.min_rate,
                    min_rate_window=loaded.config.sync.min_rate_window)
    result.bytes_downloaded, result.resumed_from = done.transferred, done.resumed_from
    sync_cfg = loaded.config.sync
    version = InstalledVersion(
        last_updated=str(remote.last_updated or ""), version=entry.get("version"),
        sha256=done.sha256, installed_at=dt.datetime.now().astimezone().isoformat("T", "seconds"),
    )
    request = InstallRequest(
        name=ds.name, package=done.path, local_dir=ds.local_dir, mode=ds.mode,
        keep_previous=ds.keep_previous, version=version,
        limits=ExtractLimits(max_total_bytes=sync_cfg.max_total_bytes,
                             max_ratio=sync_cfg.max_ratio, **_announced(entry),
                             refuse_empty=_holds_files(ds.local_dir)),
        fsync=sync_cfg.fsync, extract_threads=extract_threads(sync_cfg.extract_threads),
    )
    try:
        install(state, request)
    except OSError:
        raise  # a full disk, a permission: the verified download is kept for the next run
    except Exception:
        discard_part(part)  # a bad archive will not get better by keeping it
        raise
    discard_part(part)
    result.status, result.method = "installed", "full"


def package_path(entry: dict[str, Any], name: str) -> str:
    """Where the package is: the catalog's ``package`` (a static tree names each version's
    own object, which a publish never overwrites), else the fixed ``package/NAME.zip``."""
    path = entry.get("package")
    return path if isinstance(path, str) and path else f"package/{name}.zip"


def _announced(entry: dict[str, Any]) -> dict[str, int]:
    """The totals an archive must match: only our hub's catalog describes the package
    itself (it carries the package's sha256); the existing hub's counts its folder."""
    if not entry.get("sha256"):
        return {}
    return {"expect_files": entry["file_count"], "expect_bytes": entry["total_size"]} \
        if isinstance(entry.get("file_count"), int) and isinstance(entry.get("total_size"), int) \
        else {}


def _holds_files(local_dir: Any) -> bool:
    try:
        return any(p.is_file() for p in local_dir.rglob("*"))
    except OSError:
        return False


def extract_threads(configured: int | None) -> int:
    """``sync.extract_threads``, or one per CPU this process may use (at most 4)."""
    return configured if configured is not None else min(usable_cpus(), 4)


def _check_space(part: Any, ds: DatasetConfig, package_size: int | None,
                 total_size: Any) -> None:
    """Refuse early, with a clear message, when the disk cannot hold the new version."""
    need_dl = package_size or 0
    need_data = int(total_size) if isinstance(total_size, int) else 0
    free_state = free_bytes(part.parent)
    free_data = free_bytes(ds.local_dir.parent)
    if free_state < need_dl:
        raise DatahubsyncError(f"{ds.name}: not enough disk space in {part.parent} "
                               f"(need {need_dl} bytes, {free_state} free)")
    if free_data < need_data:
        raise DatahubsyncError(f"{ds.name}: not enough disk space for {ds.local_dir} "
                               f"(need {need_data} bytes, {free_data} free)")
