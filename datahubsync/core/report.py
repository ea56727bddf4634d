"""What every client run tells the hub and node_exporter when it ends.

One hook for every command (the runner calls :func:`finish_run`), one for the
service loops (:class:`ServiceReporter`, throttled): a small JSON document
``POST``ed to ``{fleet.report_url or hub.url}/api/v1/fleet/report`` and, with
``--metrics-file`` / ``fleet.metrics_file``, node_exporter textfile-collector
metrics written atomically (the Prometheus convention for cron jobs).

Reporting never fails or slows the command: one try with a short timeout
(``fleet.timeout``, 3 s), a warning when it fails, and the report kept in a
bounded outbox (``fleet.outbox_max``) that goes out with the next one. A hub
that answers 404 (the existing hub has no such route; 405 or 501 likewise) is
not asked again in that run, and nothing is kept for it: quietly.

The document: ``{"host", "version", "command", "started", "ended", "seconds",
"outcome" (ok | partial | failed | interrupted | locked), "exit_code",
"message", "details": {...}}``; ``details`` is what the command added
(per dataset: versions, method, bytes, seconds; pictures: backlog, failed,
given up; logs: pending, health; batch: the task and its state).
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datahubsync import __version__
from datahubsync.core.statefile import read_json, write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)
ROUTE = "/api/v1/fleet/report"
OUTCOMES = {0: "ok", 1: "partial", 2: "failed", 70: "failed", 75: "locked", 130: "interrupted"}


@dataclass
class RunRecord:
    """One run of one command, filled by the runner and the command."""

    command: str
    started: float = field(default_factory=time.time)
    ended: float | None = None
    exit_code: int = 0
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    bytes: int = 0  # moved by the run (for the metrics file)
    items_failed: int = 0

    def document(self, host: str) -> dict[str, Any]:
        ended = self.ended or time.time()
        return {"host": host, "version": __version__, "command": self.command,
                "started": _iso(self.started), "ended": _iso(ended),
                "seconds": round(ended - self.started, 3),
                "outcome": OUTCOMES.get(self.exit_code, "failed"),
                "exit_code": self.exit_code, "message": self.message[:500],
                "details": self.details}


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def host_name(configured: str | None) -> str:
    return configured or socket.gethostname()


def report_url(loaded: Any) -> str | None:
    cfg = loaded.config
    base = cfg.fleet.report_url or cfg.hub.url
    if base and base.startswith("s3://"):  # a bucket as the hub has no report route
        return None
    return f"{base.rstrip('/')}{ROUTE}" if base else None


@dataclass
class Delivery:
    """Sends reports to one URL; remembers, for this process, a hub without the route."""

    url: str
    outbox: Path
    token: str | None = None
    timeout: float = 3.0
    outbox_max: int = 50
    post: Callable[..., Any] | None = None  # injectable for tests; default requests
    gone: bool = False  # the hub answered 404: not asked again in this process

    def send(self, document: Mapping[str, Any], quiet: bool = False) -> bool:
        """Deliver ``document`` (and what the outbox holds); False when kept for later.
        ``quiet``: the run failed and said so already; a report kept is logged at debug."""
        if self.gone:
            return False
        waiting = read_json(self.outbox, [])
        waiting = waiting if isinstance(waiting, list) else []
        pending = [*waiting, dict(document)]
        sent = 0
        for doc in pending:
            status = self._post(doc)
            if status in (404, 405, 501):  # no such route (or method): an older hub
                self.gone = True
                log.debug("%s answers %s: this hub takes no fleet reports", self.url, status)
                self._keep([])
                return False
            if status is None or not 200 <= status < 300:
                break
            sent += 1
        left = pending[sent:]
        self._keep(left[-self.outbox_max:])
        if left:
            say = log.debug if quiet else log.warning
            say("fleet report not delivered to %s (%s); kept (%d waiting)",
                self.url.split("?")[0], "unreachable" if status is None else f"HTTP {status}",
                len(left))
        return not left

    def _keep(self, docs: list[dict[str, Any]]) -> None:
        if docs or self.outbox.exists():
            try:
                write_json_atomic(self.outbox, docs)
            except OSError as exc:
                log.warning("cannot keep the fleet report outbox %s: %s", self.outbox, exc)

    def _post(self, doc: Mapping[str, Any]) -> int | None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            if self.post is not None:
                return int(self.post(self.url, doc, headers, self.timeout))
            import requests

            response = requests.post(self.url, json=doc, headers=headers,
                                     timeout=(self.timeout, self.timeout))
            response.close()
            return response.status_code
        except Exception as exc:  # noqa: BLE001 - reporting never fails the command
            log.debug("fleet report to %s failed: %s", self.url, exc)
            return None


def delivery_for(loaded: Any) -> Delivery | None:
    """The configured delivery, or None when reporting is off or no URL is known."""
    cfg = loaded.config.fleet
    url = report_url(loaded)
    if not cfg.report or url is None:
        return None
    return Delivery(url, loaded.layout.fleet_outbox, cfg.token, cfg.timeout, cfg.outbox_max)


def write_metrics_file(path: Path, run: RunRecord, now: float | None = None) -> None:
    """node_exporter textfile metrics for ``run.command``, merged with the other commands'
    series already in the file (one file may serve every command of the host)."""
    label = run.command.replace("\\", "\\\\").replace('"', '\\"')
    name = "datahubsync"
    ended = run.ended or (now or time.time())
    series = {
        f'{name}_last_run_timestamp_seconds{{command="{label}"}}': ended,
        f'{name}_last_run_duration_seconds{{command="{label}"}}': round(ended - run.started, 3),
        f'{name}_last_run_exit_code{{command="{label}"}}': run.exit_code,
        f'{name}_last_run_bytes{{command="{label}"}}': run.bytes,
        f'{name}_last_run_items_failed{{command="{label}"}}': run.items_failed,
    }
    old = _read_textfile(path)
    if run.exit_code == 0:
        series[f'{name}_last_success_timestamp_seconds{{command="{label}"}}'] = ended
    else:
        key = f'{name}_last_success_timestamp_seconds{{command="{label}"}}'
        if key in old:
            series[key] = old[key]
    merged = {k: v for k, v in old.items() if f'command="{label}"' not in k}
    merged.update(series)
    helps = {
        "last_run_timestamp_seconds": "When the command last ended (Unix time)",
        "last_success_timestamp_seconds": "When the command last ended with exit 0",
        "last_run_duration_seconds": "Seconds the last run took",
        "last_run_exit_code": "Exit status of the last run",
        "last_run_bytes": "Bytes the last run moved",
        "last_run_items_failed": "Items (datasets, files, days) that failed in the last run",
    }
    lines = []
    for short, text in helps.items():
        metric = f"{name}_{short}"
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} gauge"]
        lines += [f"{k} {_number(v)}" for k, v in sorted(merged.items())
                  if k.split("{")[0] == metric]
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode(), mode=0o644)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _read_textfile(path: Path) -> dict[str, float]:
    try:
        text = path.read_text()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and " " in line:
            key, _, value = line.rpartition(" ")
            try:
                found[key] = float(value)
            except ValueError:
                continue
    return found


def finish_run(loaded: Any, run: RunRecord, metrics_file: Path | None = None) -> None:
    """The end of a client command: the report to the hub and the metrics file; each
    failure is one warning, never the command's."""
    run.ended = run.ended or time.time()
    path = metrics_file or loaded.config.fleet.metrics_file
    if path is not None:
        try:
            write_metrics_file(Path(path), run)
        except OSError as exc:
            log.warning("cannot write the metrics file %s: %s", path, exc)
    delivery = delivery_for(loaded)
    if delivery is not None:  # a failed run said so in its own line: no second one
        delivery.send(run.document(host_name(loaded.config.fleet.host)),
                      quiet=run.exit_code != 0)


@dataclass
class ServiceReporter:
    """Reports of a long-running service (``pictures run``, ``logs run``): at most one
    every ``every`` seconds, each a run of its own for the hub's view."""

    loaded: Any
    command: str
    every: float
    clock: Callable[[], float] = time.monotonic
    _last: float | None = None
    _delivery: Delivery | None = None

    def __call__(self, status: str, details: Mapping[str, Any], ok: bool) -> None:
        now = self.clock()
        if self._last is not None and now - self._last < self.every:
            return
        self._last = now
        if self._delivery is None:
            self._delivery = delivery_for(self.loaded)
            if self._delivery is None:
                return
        run = RunRecord(self.command, exit_code=0 if ok else 1, message=status,
                        details=dict(details))
        run.ended = run.started
        self._delivery.send(run.document(host_name(self.loaded.config.fleet.host)))
