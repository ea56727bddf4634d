"""The ``/api/datasets`` document, shared by ``serve`` and the static publisher."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from datahubsync.core.timeutil import format_hub_time
from datahubsync.datasets.delta import DeltaRecord
from datahubsync.datasets.store import Published


def dataset_entry(name: str, published: Published | None) -> dict[str, Any]:
    """One element of ``/api/datasets`` (the existing hub's keys first)."""
    if published is None:
        return {"name": name, "last_updated": None, "file_count": 0, "total_size": 0,
                "package_ready": False, "package_size": 0, "sha256": None, "etag": None,
                "version": None, "manifest": None, "deltas": []}
    r = published.record
    return {"name": name, "last_updated": r.last_updated, "file_count": r.file_count,
            "total_size": r.total_size, "package_ready": True, "package_size": r.size,
            "sha256": r.sha256, "etag": published.etag, "version": r.version,
            "manifest": f"manifest/{name}.json" if published.manifest else None,
            "deltas": [{"from": d.from_version, "path": delta_path(name, d),
                        "size": d.size, "sha256": d.sha256} for d in published.deltas]}


def delta_path(name: str, delta: DeltaRecord) -> str:
    """Where a delta is served, relative to the hub URL (same in a static tree)."""
    return f"delta/{name}/{delta.from_version}-{delta.to_version}.zip"


def datasets_document(names: Iterable[str], published: Mapping[str, Published],
                      tz: dt.tzinfo) -> dict[str, Any]:
    """The whole document: every known dataset, built or not."""
    every = sorted(set(names) | set(published))
    return {
        "generated_at": format_hub_time(dt.datetime.now(tz), tz),
        "datasets": [dataset_entry(n, published.get(n)) for n in every],
    }


def current_versions(published: Mapping[str, Published]) -> dict[str, str]:
    """The data version the hub serves now, per dataset (what a host must hold)."""
    return {name: p.record.last_updated for name, p in published.items()}


def package_summary(published: Mapping[str, Published]) -> list[dict[str, Any]]:
    """The hub's packages for the fleet page: version, build time, size, delta sizes."""
    return [{"name": name, "last_updated": p.record.last_updated, "version": p.record.version,
             "built_at": p.record.built_at, "package_size": p.record.size,
             "file_count": p.record.file_count,
             "deltas": [{"from": d.from_version, "size": d.size} for d in p.deltas]}
            for name, p in sorted(published.items())]
