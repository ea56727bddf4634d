"""The hub's HTTP routes: ``/api/datasets`` and ``/package/{name}.zip``.

Compatibility with the existing hub and its clients: the JSON keys of the existing hub, plus
``generated_at`` and per dataset ``sha256``, ``etag``, ``version``. A plain GET
of a package answers 200 (old clients accept nothing else); Range gives 206,
If-Range with a stale validator gives the whole file again. Package names are
looked up in memory, so an unknown name never touches the filesystem.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from datahubsync.core.config import LoadedConfig
from datahubsync.core.httprange import normalise
from datahubsync.core.metrics import Metrics
from datahubsync.core.timeutil import zone
from datahubsync.datasets.hub import Builder, BuildSettings
from datahubsync.datasets.routes_doc import datasets_document
from datahubsync.datasets.store import PackageStore, Published, file_etag

log = logging.getLogger(__name__)


class PackageFileResponse(web.FileResponse):
    """FileResponse with Range and If-Range as RFC 9110 says (``core.httprange``).

    aiohttp alone knows only the date form of If-Range and would serve a range
    of a *different* file to a client resuming with a stale ETag.
    """

    def __init__(self, path: Any, etag: str) -> None:
        super().__init__(path)
        self._package_etag = etag

    async def prepare(self, request: web.BaseRequest) -> Any:
        return await super().prepare(normalise(request, self._package_etag))


@dataclass
class Catalog:
    """What this process publishes, refreshed from the store on disk."""

    store: PackageStore
    names: list[str]
    tz: dt.tzinfo
    published: dict[str, Published] = field(default_factory=dict)

    def refresh(self) -> None:
        self.published = self.store.current()


CATALOG = web.AppKey("datasets_catalog", Catalog)
BUILDER = web.AppKey("datasets_builder", Builder)


async def api_datasets(request: web.Request) -> web.Response:
    catalog = request.app[CATALOG]
    # Re-read the store (a few small files) so every worker answers with the
    # packages published right now, not as of its last poll.
    await asyncio.to_thread(catalog.refresh)
    return web.json_response(datasets_document(catalog.names, catalog.published, catalog.tz))


async def _published(request: web.Request, name: str | None) -> Published | None:
    """What is published for ``name``; names are looked up in memory, never on disk."""
    catalog = request.app[CATALOG]
    published = catalog.published.get(name) if name else None
    if published is None and name in catalog.names:
        # Another worker may have published it since our last poll: look once more.
        await asyncio.to_thread(catalog.refresh)
        published = catalog.published.get(name)
    return published


async def package(request: web.Request) -> web.StreamResponse:
    filename = request.match_info["filename"]
    published = await _published(request, filename[:-4] if filename.endswith(".zip") else None)
    if published is None:
        return web.json_response({"error": "Package not found"}, status=404)
    return PackageFileResponse(published.path, published.etag)


async def manifest(request: web.Request) -> web.StreamResponse:
    """``/manifest/{dataset}.json``: the per-file digests of the package being served."""
    filename = request.match_info["filename"]
    published = await _published(request, filename[:-5] if filename.endswith(".json") else None)
    if published is None or published.manifest is None:
        return web.json_response({"error": "Manifest not found"}, status=404)
    return web.FileResponse(published.manifest, headers={"Content-Type": "application/json"})


async def delta(request: web.Request) -> web.StreamResponse:
    """``/delta/{dataset}/{from}-{to}.zip``: a delta to the version being served."""
    catalog = request.app[CATALOG]
    name, filename = request.match_info["dataset"], request.match_info["filename"]
    published = await _published(request, name)
    wanted = f"{name}_{filename[:-4]}.delta.zip" if filename.endswith(".zip") else None
    for item in published.deltas if published else ():
        if item.file == wanted:
            path = catalog.store.cache_dir / item.file
            try:
                st = await asyncio.to_thread(path.stat)
            except FileNotFoundError:
                break  # pruned since the last poll
            return PackageFileResponse(path, file_etag(st))
    return web.json_response({"error": "Delta not found"}, status=404)


def setup(app: web.Application, catalog: Catalog, builder: Builder, build: bool,
          check_interval: float, poll: float, on_first_scan: Any = None) -> None:
    """Mount the routes; run the builder (when this process builds) and the catalog poll.

    Only one process builds; every worker re-reads the store every ``poll``
    seconds, so all of them publish a new package within that delay.
    """
    app[CATALOG] = catalog
    app[BUILDER] = builder
    app.router.add_get("/api/datasets", api_datasets)
    app.router.add_get("/package/{filename}", package)
    app.router.add_get("/manifest/{filename}", manifest)
    app.router.add_get("/delta/{dataset}/{filename}", delta)

    async def background(app: web.Application) -> Any:
        tasks = [asyncio.create_task(_poll_catalog(catalog, builder, poll))]
        if build:
            tasks.append(asyncio.create_task(_build_loop(builder, catalog, check_interval,
                                                         on_first_scan)))
        elif on_first_scan is not None:
            await asyncio.to_thread(_refresh, catalog, builder)
            on_first_scan()
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    app.cleanup_ctx.append(background)


def _refresh(catalog: Catalog, builder: Builder) -> None:
    catalog.names = builder.dataset_names()
    catalog.refresh()


async def _poll_catalog(catalog: Catalog, builder: Builder, poll: float) -> None:
    while True:
        try:
            await asyncio.to_thread(_refresh, catalog, builder)
        except Exception:  # noqa: BLE001 - a bad pass must not stop serving
            log.exception("catalog refresh failed")
        await asyncio.sleep(poll)


async def _build_loop(builder: Builder, catalog: Catalog, interval: float,
                      on_first_scan: Any) -> None:
    first = True
    while True:
        try:
            await asyncio.to_thread(_refresh, catalog, builder)
            if first and on_first_scan is not None:
                on_first_scan()
            first = False
            await asyncio.to_thread(builder.run_once)
            catalog.refresh()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - keep the hub up; the next pass retries
            log.exception("package builder pass failed")
        await asyncio.sleep(builder.next_wakeup(interval))


def setup_hub(app: web.Application, loaded: LoadedConfig, metrics: Metrics, build: bool,
              on_ready: Any = None) -> Catalog:
    """The hub as ``serve`` runs it: the store in ``serve.cache_dir`` (or the state
    directory), the builder (in the one process that builds), the routes; returns the
    catalog the other routes read the current versions from."""
    cfg = loaded.config.serve
    tz = zone(cfg.timezone)
    store = PackageStore(cfg.cache_dir or loaded.layout.packages)
    if build:
        store.remove_temp_files()
    settings = BuildSettings(
        data_root=cfg.data_root, datasets=cfg.datasets, debounce=cfg.debounce,
        newer_ratio=cfg.newer_ratio, keep_packages=cfg.keep_packages,
        compress_level=cfg.compress_level, compress_threads=cfg.compress_threads, tz=tz,
        fresh_window=cfg.fresh_window, keep_deltas=cfg.keep_deltas,
        max_delta_share=cfg.max_delta_share, outside_links=cfg.dataset_links_outside,
        compress_codec=cfg.compress_codec,
    )
    builder = Builder(settings, store, metrics)
    catalog = Catalog(store, list(cfg.datasets or []), tz)
    setup(app, catalog, builder, build, cfg.check_interval, cfg.catalog_poll, on_ready)
    return catalog
