"""``datasets publish``: a static tree that nginx, object storage or a CDN can serve.

It holds the same paths a hub serves (``health``, ``api/datasets``,
``package/<name>.zip``, ``manifest/<name>.json``,
``delta/<name>/<from>-<to>.zip``), so ``datasets sync`` works against it
unchanged.
Packages are built into ``.store/`` and hard-linked into ``package/`` with a
rename, and the catalog is written last: a reader never sees a catalog that
names a package not yet in place.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datahubsync.core.config import LoadedConfig
from datahubsync.core.metrics import Metrics
from datahubsync.core.statefile import write_bytes_atomic, write_json_atomic
from datahubsync.core.timeutil import zone
from datahubsync.datasets.hub import Builder, BuildSettings
from datahubsync.datasets.routes_doc import datasets_document, delta_path
from datahubsync.datasets.store import PackageStore


@dataclass(frozen=True)
class PublishResult:
    out: Path
    datasets: list[dict[str, Any]]
    built: dict[str, str]


def _link_into(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` atomically (a reader sees old or new, whole)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    link = target.with_name(f".{target.name}.tmp")
    link.unlink(missing_ok=True)
    os.link(source, link)
    os.replace(link, target)


def publish(loaded: LoadedConfig, out: Path, force: bool = False) -> PublishResult:
    """Build what needs building from ``serve.data_root`` and write the static tree."""
    cfg = loaded.config.serve
    tz = zone(cfg.timezone)
    store = PackageStore(out / ".store")
    store.remove_temp_files()
    settings = BuildSettings(
        data_root=cfg.data_root, datasets=cfg.datasets, debounce=0,
        newer_ratio=0.0 if force else cfg.newer_ratio, keep_packages=cfg.keep_packages,
        compress_level=cfg.compress_level, compress_threads=cfg.compress_threads, tz=tz,
        fresh_window=cfg.fresh_window, keep_deltas=cfg.keep_deltas,
        max_delta_share=cfg.max_delta_share, compress_codec=cfg.compress_codec,
    )
    builder = Builder(settings, store, Metrics())
    decisions = builder.run_once(force=force)
    published = store.current()
    package_dir = out / "package"
    package_dir.mkdir(parents=True, exist_ok=True)
    for name, item in published.items():
        _link_into(item.path, package_dir / f"{name}.zip")
        if item.manifest is not None:
            _link_into(item.manifest, out / "manifest" / f"{name}.json")
        wanted = set()
        for delta in item.deltas:
            target = out / delta_path(name, delta)
            _link_into(store.cache_dir / delta.file, target)
            wanted.add(target.name)
        for stale in (out / "delta" / name).glob("*.zip"):
            if stale.name not in wanted:
                stale.unlink()
    document = datasets_document(builder.dataset_names(), published, tz)
    for entry in document["datasets"]:
        entry["etag"] = None  # a static server sends its own validator
    write_bytes_atomic(out / "health", json.dumps({"status": "ok"}).encode() + b"\n")
    write_json_atomic(out / "api" / "datasets", document)
    return PublishResult(out, document["datasets"],
                         {n: d.reason for n, d in decisions.items()})
