"""``datasets publish``: a static tree that nginx, object storage or a CDN can serve.

It holds the same paths a hub serves (``health``, ``api/datasets``,
``package/<name>.zip``, ``manifest/<name>.json``,
``delta/<name>/<from>-<to>.zip``), so ``datasets sync`` works against it
unchanged.
Packages are built into ``.store/`` and hard-linked into ``package/`` with a
rename, and the catalog is written last: a reader never sees a catalog that
names a package not yet in place. Each version also has files of its own,
``package/<name>/<version>.zip`` and ``manifest/<name>/<version>.json``, which
the catalog names (``package``, ``manifest``): a publish never overwrites them,
so a reader holding the previous catalog still finds that version whole (on
object storage too, where ``datasets publish --to`` mirrors this tree). They
are removed, after the new catalog is written, once the store no longer keeps
that version (``serve.keep_packages``); the fixed ``package/<name>.zip`` stays
for the existing clients.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datahubsync.core.config import LoadedConfig
from datahubsync.core.statefile import created_mode, write_bytes_atomic, write_json_atomic
from datahubsync.core.timeutil import zone
from datahubsync.datasets.hub import Builder, BuildSettings
from datahubsync.datasets.routes_doc import datasets_document, delta_path
from datahubsync.datasets.store import PackageStore


class _NoMetrics:
    """A publish is one process that serves no ``/metrics``: nothing to count into."""

    def describe(self, *args: object, **labels: object) -> None:
        pass

    def inc(self, *args: object, **labels: object) -> None:
        pass

    def set(self, *args: object, **labels: object) -> None:
        pass


@dataclass(frozen=True)
class PublishResult:
    out: Path
    datasets: list[dict[str, Any]]
    built: dict[str, str]


def _link_into(source: Path, target: Path, mode: int) -> None:
    """Hard-link ``source`` to ``target`` atomically (a reader sees old or new, whole),
    with ``mode``: the web server serving the tree runs as another user (a store an
    earlier release filled holds 0600 manifests, and a link shares their inode)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    link = target.with_name(f".{target.name}.tmp")
    link.unlink(missing_ok=True)
    os.link(source, link)
    os.chmod(link, mode)
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
    builder = Builder(settings, store, _NoMetrics())  # type: ignore[arg-type]
    decisions = builder.run_once(force=force)
    published = store.current()
    package_dir = out / "package"
    package_dir.mkdir(parents=True, exist_ok=True)
    mode = created_mode()  # as any file this user creates: readable by nginx's user at 022
    for name, item in published.items():
        version = item.record.version
        _link_into(item.path, package_dir / name / f"{version}.zip", mode)
        _link_into(item.path, package_dir / f"{name}.zip", mode)
        if item.manifest is not None:
            _link_into(item.manifest, out / "manifest" / name / f"{version}.json", mode)
            _link_into(item.manifest, out / "manifest" / f"{name}.json", mode)
        for delta in item.deltas:
            _link_into(store.cache_dir / delta.file, out / delta_path(name, delta), mode)
    document = datasets_document(builder.dataset_names(), published, tz)
    for entry in document["datasets"]:
        entry["etag"] = None  # a static server sends its own validator
        name, version = entry["name"], entry["version"]
        if version and name in published:
            entry["package"] = f"package/{name}/{version}.zip"
            if entry["manifest"]:
                entry["manifest"] = f"manifest/{name}/{version}.json"
    write_bytes_atomic(out / "health", json.dumps({"status": "ok"}).encode() + b"\n", mode)
    write_json_atomic(out / "api" / "datasets", document, mode)
    _prune_versions(out, store)
    return PublishResult(out, document["datasets"],
                         {n: d.reason for n, d in decisions.items()})


def _prune_versions(out: Path, store: PackageStore) -> None:
    """Remove the files of versions the store no longer keeps (after the catalog moved on,
    so a reader of the previous catalog still finds its version; deltas go with the
    version they lead to)."""
    kept: dict[str, set[str]] = {}

    def gone(dataset: str, version: str) -> bool:
        if dataset not in kept:
            kept[dataset] = {r.version for r in store.records(dataset)}
        return version not in kept[dataset]

    for kind, suffix in (("package", ".zip"), ("manifest", ".json"), ("delta", ".zip")):
        for path in (out / kind).glob(f"*/*{suffix}"):
            version = path.name[: -len(suffix)]
            if kind == "delta":
                version = version.rpartition("-")[2]
            if not path.name.startswith(".") and gone(path.parent.name, version):
                path.unlink(missing_ok=True)
