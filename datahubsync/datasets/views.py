"""What ``datasets list`` and ``datasets status`` report: the hub next to this host, and
this host's own state. Rows are plain dicts (the ``--json`` documents)."""

from __future__ import annotations

from typing import Any

from datahubsync.core.config import LoadedConfig
from datahubsync.core.http import RetryPolicy
from datahubsync.core.timeutil import zone
from datahubsync.datasets.client import hub_catalog, needs_update
from datahubsync.datasets.hubaccess import hub_access
from datahubsync.datasets.state import ClientState


def list_view(loaded: LoadedConfig) -> list[dict[str, Any]]:
    """One row per dataset the hub offers or this host configures, with its state:
    up to date, outdated, not installed, not configured, not offered by hub."""
    local = ClientState(loaded.state_dir).last_sync()
    configured = {d.name for d in loaded.config.datasets}
    tz = zone(loaded.config.hub.timezone)
    with hub_access(loaded).session() as session:
        catalog = hub_catalog(loaded, session, RetryPolicy(attempts=loaded.config.hub.retries))
    rows = []
    for name in sorted(set(catalog) | configured):
        remote = catalog.get(name, {})
        mine = local.get(name)
        if name not in catalog:
            state = "not offered by hub"
        elif name not in configured:
            state = "not configured"
        elif mine is None:
            state = "not installed"
        else:
            state = "outdated" if needs_update(remote.get("last_updated"), mine, tz) \
                else "up to date"
        rows.append({"name": name, "configured": name in configured,
                     "remote_last_updated": remote.get("last_updated"),
                     "package_ready": remote.get("package_ready"),
                     "package_size": remote.get("package_size"),
                     "local_last_updated": mine, "state": state})
    return rows


def status_view(loaded: LoadedConfig) -> list[dict[str, Any]]:
    """This host's state of each configured dataset (no network): version, kept
    previous versions, a partial download, an install a crash interrupted."""
    state = ClientState(loaded.state_dir)
    last = state.last_sync()
    rows = []
    for ds in loaded.config.datasets:
        record = state.record(ds.name)
        part = state.part_path(ds.name)
        rows.append({
            "name": ds.name, "local_dir": str(ds.local_dir), "mode": ds.mode,
            "present": ds.local_dir.is_dir(), "last_updated": last.get(ds.name),
            "installed_at": record.current.installed_at if record.current else None,
            "previous": [p.last_updated for p in record.previous],
            "skip_last_updated": record.skip_last_updated,
            "partial_download_bytes": part.stat().st_size if part.exists() else 0,
            "interrupted_install": state.journal_path(ds.name).exists(),
        })
    return rows
