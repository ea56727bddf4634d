"""Client side of a delta sync: fetch the delta and the manifest, build, verify, swap.

The delta downloads (and resumes) like a package, into its own ``.part`` file;
its members pass the same safety checks as a package's and are read straight
from it; the new tree is built and verified in a sibling of ``local_dir`` and
swapped in by the same journalled install as a full package, so a kill -9 at
any point leaves the old or the new version, never a mix.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from datahubsync.core.config import LoadedConfig
from datahubsync.core.errors import IntegrityError
from datahubsync.core.http import RetryPolicy, get_json
from datahubsync.core.progress import Progress
from datahubsync.datasets.archive import ExtractLimits
from datahubsync.datasets.config import DatasetConfig
from datahubsync.datasets.delta_apply import DeltaStats, LocalChanged, build_tree
from datahubsync.datasets.download import RemotePackage, discard_part, download
from datahubsync.datasets.hubaccess import hub_access
from datahubsync.datasets.install import InstallRequest, install_tree
from datahubsync.datasets.state import ClientState, InstalledVersion

log = logging.getLogger(__name__)


def delta_part_path(state: ClientState, name: str) -> Path:
    return state.state_dir / "downloads" / f"{name}.delta.part"


def install_delta(loaded: LoadedConfig, state: ClientState, session: requests.Session,
                  entry: dict[str, Any], delta: dict[str, Any], ds: DatasetConfig,
                  progress: Progress, policy: RetryPolicy, deadline: float | None,
                  clock: Callable[[], float], result: Any) -> DeltaStats:
    """Install the hub's current version of ``ds`` from ``delta``; fills ``result``."""
    hub = loaded.config.hub
    access = hub_access(loaded)
    manifest = get_json(session, access.url(entry["manifest"]),
                        (hub.connect_timeout, hub.timeout), policy, max_bytes=256 << 20)
    if not isinstance(manifest, dict) or manifest.get("version") != entry.get("version") \
            or not isinstance(manifest.get("files"), list):
        raise IntegrityError(f"{ds.name}: the manifest is not of version {entry.get('version')}")
    remote = RemotePackage(name=ds.name, url=access.url(delta["path"]),
                           size=delta.get("size"), sha256=delta.get("sha256"), etag=None,
                           last_updated=entry.get("last_updated"))
    part = delta_part_path(state, ds.name)
    done = download(session, remote, part, connect_timeout=hub.connect_timeout,
                    read_timeout=hub.timeout, policy=policy, progress=progress,
                    deadline=deadline, clock=clock,
                    max_bytes=loaded.config.sync.max_total_bytes,
                    min_rate=loaded.config.sync.min_rate,
                    min_rate_window=loaded.config.sync.min_rate_window)
    result.bytes_downloaded, result.resumed_from = done.transferred, done.resumed_from
    sync_cfg = loaded.config.sync
    limits = ExtractLimits(max_total_bytes=sync_cfg.max_total_bytes, max_ratio=sync_cfg.max_ratio)
    stats = DeltaStats()

    def fill(staging: Path, obsolete: list[Path]) -> None:
        nonlocal stats
        stats = build_tree(ds.local_dir, done.path, manifest, staging, limits,
                           recycle_from=obsolete)

    version = InstalledVersion(
        last_updated=str(entry.get("last_updated") or ""), version=entry.get("version"),
        sha256=entry.get("sha256"),
        installed_at=dt.datetime.now().astimezone().isoformat("T", "seconds"))
    request = InstallRequest(name=ds.name, package=done.path, local_dir=ds.local_dir,
                             mode=ds.mode, keep_previous=ds.keep_previous, version=version,
                             limits=limits, fsync=sync_cfg.fsync, reuse_obsolete=True)
    try:
        install_tree(state, request, fill)
    except IntegrityError as exc:
        if not isinstance(exc, LocalChanged):
            discard_part(part)  # a corrupt delta will not get better
        raise
    discard_part(part)
    result.status, result.method = "installed", "delta"
    result.files_added, result.files_changed = stats.added, stats.changed
    result.files_appended, result.files_deleted = stats.appended, stats.deleted
    log.info("%s: delta from %s: %d bytes, %d added, %d changed, %d appended, %d deleted",
             ds.name, delta.get("from"), done.transferred, stats.added, stats.changed,
             stats.appended, stats.deleted)
    return stats
