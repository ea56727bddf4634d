"""The ``serve`` app factory: health, metrics, and each feature's routes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from datahubsync.batch import routes as batch_routes
from datahubsync.core.config import LoadedConfig
from datahubsync.core.db import unavailable
from datahubsync.core.metrics import Metrics
from datahubsync.datasets import routes as dataset_routes
from datahubsync.datasets.routes_doc import current_versions, package_summary
from datahubsync.fleet import routes as fleet_routes
from datahubsync.logs import ingest as logs_ingest
from datahubsync.pictures import bundle_route as picture_bundle
from datahubsync.pictures import file_routes as picture_files
from datahubsync.pictures import push_routes as picture_push

log = logging.getLogger(__name__)
METRICS = web.AppKey("metrics", Metrics)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    started = time.monotonic()
    try:
        response = await handler(request)
        status = response.status
    except web.HTTPException as exc:
        status = exc.status
        raise
    except Exception:
        status = 500
        raise
    finally:
        route = _route_label(request)
        metrics.inc("datahubsync_http_requests_total", route=route, status=str(status))
        metrics.inc("datahubsync_http_request_seconds_total", time.monotonic() - started,
                    route=route)
    return response


@web.middleware
async def store_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A store (SQLite, PostgreSQL) that is down or locked: 503 and Retry-After, not 500."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        if not unavailable(exc):
            raise
        log.warning("%s %s: store unavailable: %s", request.method, request.path,
                    str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
        return web.json_response({"status": "error", "error": "store unavailable; retry later",
                                  "message": "store unavailable; retry later"}, status=503,
                                 headers={"Retry-After": "30"})


async def _plain_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "datahubsync"  # no versions for a scanner to match


async def _count_bytes(request: web.Request, response: web.StreamResponse) -> None:
    if response.content_length and request.method != "HEAD":
        request.app[METRICS].inc("datahubsync_http_response_bytes_total",
                                 response.content_length, route=_route_label(request))


async def health(request: web.Request) -> web.Response:
    """``{"status": "ok"}`` as the existing hub answers, plus ``warnings`` when something
    stands in the way (a missing data_root): the process is up, the data may not be."""
    doc: dict[str, Any] = {"status": "ok"}
    builder = request.app.get(dataset_routes.BUILDER)
    if builder is not None and builder.warnings:
        doc["warnings"] = sorted(builder.warnings.values())
    return web.json_response(doc)


async def metrics_text(request: web.Request) -> web.Response:
    """The whole service's metrics (every worker's, through prometheus_client's
    multiprocess files), then the computed families (the fleet's gauges)."""
    text = await asyncio.to_thread(request.app[METRICS].render)
    for extra in request.app[EXTRA_METRICS]:  # computed families (the fleet's gauges)
        text += await asyncio.to_thread(extra)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


EXTRA_METRICS = web.AppKey("extra_metrics", list)


# serve's counters reach the shared files at most this often (core.metrics)
METRICS_FLUSH_EVERY = 0.5


def _flushing(metrics: Metrics) -> Callable[[web.Application], Any]:
    """``cleanup_ctx``: flush the gathered metrics on a timer, and once at the end."""

    async def flushing(_app: web.Application) -> AsyncIterator[None]:
        async def timer() -> None:
            while True:
                await asyncio.sleep(METRICS_FLUSH_EVERY)
                metrics.flush()

        task = asyncio.create_task(timer())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        metrics.flush()

    return flushing


def new_metrics() -> Metrics:
    metrics = Metrics(flush_every=METRICS_FLUSH_EVERY)
    metrics.describe("datahubsync_http_requests_total", "counter", "HTTP requests by route/status")
    metrics.describe("datahubsync_http_request_seconds_total", "counter",
                     "Seconds spent in handlers by route")
    metrics.describe("datahubsync_http_response_bytes_total", "counter",
                     "Response body bytes served by route")
    metrics.describe("datahubsync_packages_built_total", "counter", "Packages built by dataset")
    metrics.describe("datahubsync_package_build_seconds_total", "counter",
                     "Seconds spent building packages by dataset")
    metrics.describe("datahubsync_package_last_build_seconds", "gauge",
                     "Duration of the last package build by dataset")
    return metrics


def create_app(loaded: LoadedConfig, *, build: bool = True,
               on_ready: Callable[[], Any] | None = None) -> web.Application:
    """Build the application; ``build=False`` serves existing packages only."""
    cfg = loaded.config.serve
    app = web.Application(middlewares=[count_requests, store_errors],
                          client_max_size=cfg.max_request_bytes)
    metrics = new_metrics()
    app[METRICS] = metrics
    app.cleanup_ctx.append(_flushing(metrics))
    app.on_response_prepare.append(_count_bytes)
    app.on_response_prepare.append(_plain_server_header)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_text)
    extra_metrics: list[Callable[[], str]] = []
    app[EXTRA_METRICS] = extra_metrics

    catalog = dataset_routes.setup_hub(app, loaded, metrics, build, on_ready)
    fleet_routes.setup(app, loaded, lambda: current_versions(catalog.published),
                       lambda: package_summary(catalog.published), build, extra_metrics)
    batch_routes.setup(app, loaded)
    logs_ingest.setup(app, loaded, metrics)
    picture_files.setup(app, loaded, metrics)
    picture_bundle.setup(app, loaded)
    picture_push.setup(app, loaded, metrics)
    return app
