"""The fleet routes of ``serve``: reports in, the page, the JSON, the gauges, the alerts.

- ``POST /api/v1/fleet/report``: one client run's report (``core.report``);
  a token of ``serve.api_tokens``, or a client in ``serve.trusted_networks``.
- ``GET /`` and ``/fleet``: the page; ``/fleet/host/{host}``: a host's history;
  ``GET /api/v1/fleet``: the same as JSON (``?at=ISO-8601`` evaluates it as of
  that moment, e.g. 09:00). Open to ``fleet.view_networks`` (private networks
  by default) and to a token.
- ``/metrics`` gains per-host gauges (``datahubsync_fleet_*``).
- The building process evaluates the alert rules every
  ``fleet.alerts.check_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from datahubsync.core.auth import Access, access_for, networks
from datahubsync.core.config import LoadedConfig
from datahubsync.core.report import ROUTE
from datahubsync.core.reportstore import ReportStore
from datahubsync.core.timeutil import zone
from datahubsync.core.webbody import BodyError, read_json
from datahubsync.fleet import alerts as alert_rules
from datahubsync.fleet.page import fleet_page, host_page
from datahubsync.fleet.view import HostRow, conditions, host_rows

log = logging.getLogger(__name__)
MAX_REPORT_BYTES = 256 * 1024
FLEET = web.AppKey("fleet", object)


def store_url(loaded: LoadedConfig) -> str:
    return loaded.config.fleet.store_url or f"sqlite:///{loaded.layout.fleet_db}"


class Invalid(ValueError):
    pass


def validate(doc: Any) -> tuple[dict[str, Any], float]:
    """A report as stored, and when its run ended (Unix time); Invalid naming the field."""
    if not isinstance(doc, dict):
        raise Invalid("body: must be a JSON object")
    for key, limit in (("host", 200), ("command", 64)):
        value = doc.get(key)
        if not isinstance(value, str) or not 0 < len(value) <= limit or not value.isprintable():
            raise Invalid(f"{key}: 1 to {limit} printable characters")
    try:
        ended = dt.datetime.fromisoformat(str(doc.get("ended")))
    except ValueError:
        raise Invalid("ended: an ISO-8601 time") from None
    if ended.tzinfo is None:
        ended = ended.astimezone()
    if not isinstance(doc.get("exit_code", 0), int):
        raise Invalid("exit_code: an integer")
    if not isinstance(doc.get("details", {}), dict):
        raise Invalid("details: an object")
    return doc, ended.timestamp()


class FleetService:
    """The report store and what the hub knows (its current versions, its packages)."""

    def __init__(self, loaded: LoadedConfig, current: Callable[[], Mapping[str, str | None]],
                 packages: Callable[[], Sequence[Mapping[str, Any]]],
                 clock: Callable[[], float] = time.time) -> None:
        cfg = loaded.config.fleet
        self.cfg = cfg
        self.tz = zone(loaded.config.serve.timezone)
        self.access: Access = access_for(loaded.config.serve)
        self.viewers = networks(cfg.view_networks)
        self.url = store_url(loaded)
        self.current = current
        self.packages = packages
        self.clock = clock
        self._store: ReportStore | None = None

    def store(self) -> ReportStore:
        if self._store is None:  # opened in each worker, on first use
            self._store = ReportStore(self.url, self.cfg.retention_days, self.clock)
        return self._store

    def rows(self, at: dt.datetime | None = None) -> list[HostRow]:
        now = at or dt.datetime.fromtimestamp(self.clock()).astimezone()
        return host_rows(self.store().latest(), self.current(), now, self.tz,
                         self.cfg.ready_by, self.cfg.silent_after, self.cfg.expected_hosts)

    def may_view(self, request: web.Request) -> bool:
        from datahubsync.core.auth import _in  # noqa: PLC2701 - same package, one rule

        return self.access.allows(request) or _in(self.access.client(request), self.viewers)


def _at(request: web.Request) -> dt.datetime | None:
    text = request.query.get("at")
    if not text:
        return None
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.astimezone()


def _denied() -> web.Response:
    return web.json_response({"status": "error", "message": "unauthorized: a token of "
                              "serve.api_tokens, or a client of fleet.view_networks"},
                             status=401, headers={"WWW-Authenticate": "Bearer"})


def setup(app: web.Application, loaded: LoadedConfig, current: Callable[[], Mapping[str, Any]],
          packages: Callable[[], Sequence[Mapping[str, Any]]], evaluate: bool,
          extra_metrics: list[Callable[[], str]]) -> FleetService:
    service = FleetService(loaded, current, packages)
    app[FLEET] = service

    async def report(request: web.Request) -> web.Response:
        if not service.access.allows(request):
            return web.json_response({"status": "error", "message": "unauthorized"},
                                     status=401, headers={"WWW-Authenticate": "Bearer"})
        try:
            doc, ended = validate(await read_json(request, MAX_REPORT_BYTES,
                                                  loaded.config.serve.body_timeout))
        except BodyError as exc:
            return web.json_response({"status": "error", "message": str(exc)},
                                     status=exc.status)
        except Invalid as exc:
            return web.json_response({"status": "error", "message": str(exc)}, status=400)
        await asyncio.to_thread(service.store().add, doc, ended)
        return web.json_response({"status": "success"})

    async def api(request: web.Request) -> web.Response:
        if not service.may_view(request):
            return _denied()
        try:
            at = _at(request)
        except ValueError:
            return web.json_response({"status": "error", "message": "at: an ISO-8601 time"},
                                     status=400)
        rows = await asyncio.to_thread(service.rows, at)
        ready = all(r.colour == "green" for r in rows)
        return web.json_response({"ready": ready, "ready_by": service.cfg.ready_by,
                                  "hosts": [r.to_json() for r in rows],
                                  "packages": list(service.packages())})

    async def page(request: web.Request) -> web.Response:
        if not service.may_view(request):
            return _denied()
        try:
            at = _at(request)
        except ValueError:
            at = None
        now = at or dt.datetime.fromtimestamp(service.clock()).astimezone()
        rows = await asyncio.to_thread(service.rows, now)
        return web.Response(text=fleet_page(rows, service.packages(), now.astimezone(service.tz),
                                            service.cfg.ready_by),
                            content_type="text/html", charset="utf-8")

    async def host(request: web.Request) -> web.Response:
        if not service.may_view(request):
            return _denied()
        name = request.match_info["host"]
        if not 0 < len(name) <= 200 or not name.isprintable():
            return web.Response(status=404)
        since = service.clock() - 31 * 86400
        history = await asyncio.to_thread(service.store().history, name, since)
        rows = await asyncio.to_thread(service.rows)
        row = next((r for r in rows if r.host == name), None)
        if row is None and not history:
            return web.Response(status=404, text="no such host\n")
        return web.Response(text=host_page(row, name, history), content_type="text/html",
                            charset="utf-8")

    app.router.add_post(ROUTE, report)
    app.router.add_get("/api/v1/fleet", api)
    app.router.add_get("/", page)
    app.router.add_get("/fleet", page)
    app.router.add_get("/fleet/host/{host}", host)
    extra_metrics.append(lambda: gauges(service.rows()))

    async def alerting(app: web.Application) -> Any:
        task = asyncio.create_task(_alert_loop(service)) if evaluate else None
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if service._store is not None:  # noqa: SLF001
            service._store.close()  # noqa: SLF001

    app.cleanup_ctx.append(alerting)
    return service


async def _alert_loop(service: FleetService) -> None:
    cfg = service.cfg.alerts
    if not (cfg.webhooks or cfg.smtp):
        return
    while True:
        try:
            rows = await asyncio.to_thread(service.rows)
            await asyncio.to_thread(alert_rules.evaluate, service.store(), conditions(rows),
                                    cfg, service.clock())
        except Exception:  # noqa: BLE001 - the next check tries again
            log.exception("alert evaluation failed")
        await asyncio.sleep(cfg.check_interval)


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


HELP = {
    "host_ready": "1 when the host holds every current version and nothing is wrong",
    "host_silent": "1 when the host has not reported for fleet.silent_after (or never)",
    "last_report_timestamp_seconds": "When the host last reported",
    "last_success_timestamp_seconds": "When the host's last sync that installed or kept the "
                                      "dataset ended",
    "dataset_version_lag": "1 when the host does not hold the hub's current version",
    "sync_failed": "1 when the host's last sync failed",
    "pictures_given_up": "Pictures the host gave up on",
    "logs_health": "0 healthy, 1 warning, 2 severe",
    "batch_failed": "1 when the host's last batch task failed",
}


def gauges(rows: Sequence[HostRow]) -> str:
    """Per-host gauges in the Prometheus text format (appended to /metrics), each family
    in one group as the format requires."""
    samples: dict[str, list[str]] = {name: [] for name in HELP}

    def add(name: str, labels: str, value: float) -> None:
        samples[name].append(f"datahubsync_fleet_{name}{{{labels}}} {value:.0f}")

    for r in rows:
        host = f'host="{_label(r.host)}"'
        add("host_ready", host, int(r.colour == "green"))
        add("host_silent", host, int(r.state == "silent"))
        if r.last_report:
            add("last_report_timestamp_seconds", host,
                dt.datetime.fromisoformat(r.last_report).timestamp())
        add("sync_failed", host, int(r.state == "failed"))
        ended = (r.last_sync or {}).get("ended")
        for d in r.datasets:
            labels = f'{host},dataset="{_label(d.get("name"))}"'
            add("dataset_version_lag", labels, int(not d["holds"]))
            if ended and d.get("status") in ("installed", "up_to_date"):
                add("last_success_timestamp_seconds", labels,
                    dt.datetime.fromisoformat(ended).timestamp())
        if r.pictures is not None:
            add("pictures_given_up", host, int(r.pictures.get("given_up") or 0))
        if r.logs is not None:
            add("logs_health", host,
                {"healthy": 0, "warning": 1, "severe": 2}.get(str(r.logs.get("health")), 2))
        if r.batch is not None:
            add("batch_failed", host, int(r.batch.get("status") == "failed"))
    out: list[str] = []
    for name, text in HELP.items():
        out += [f"# HELP datahubsync_fleet_{name} {text}",
                f"# TYPE datahubsync_fleet_{name} gauge", *samples[name]]
    return "\n".join(out) + "\n"
