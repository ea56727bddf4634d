"""Counters and gauges for ``/metrics``, on prometheus_client (one registry per app).

``serve`` forks workers that share a port; whichever answers a scrape must give
the figures of the whole service. prometheus_client's multiprocess mode does
exactly this: each process writes its values to memory-mapped files in one
directory (``{state_dir}/metrics``, emptied when ``serve`` starts) and a scrape
sums them (counters) or takes the maximum (our gauges: build time, last send
time). ``PROMETHEUS_MULTIPROC_DIR`` must be set before prometheus_client is first
imported in the process (``enable_multiprocess``, called by the runner).

The facade keeps the call sites small: ``describe`` once, then ``inc`` or
``set`` with labels; a metric is created on first use with the label names it
is used with.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

ENV = "PROMETHEUS_MULTIPROC_DIR"


def enable_multiprocess(directory: Path) -> None:
    """Point prometheus_client at an empty ``directory`` for this service's processes
    (before it is imported, and before the workers are forked)."""
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(directory)


class Metrics:
    """This process's metrics; :meth:`render` gives the whole service's in text format."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, disable_created_metrics

        disable_created_metrics()  # *_created series: noise for counters that live with serve
        self.multiprocess_dir = os.environ.get(ENV) or None
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._meta: dict[str, tuple[str, str]] = {}
        self._made: dict[str, Any] = {}

    def describe(self, name: str, kind: str, help_text: str) -> None:
        """Declare a metric: its kind (counter, gauge) and help text."""
        self._meta[name] = (kind, help_text)

    def _metric(self, name: str, labels: tuple[str, ...], kind: str = "counter") -> Any:
        made = self._made.get(name)
        if made is not None:
            return made
        from prometheus_client import Counter, Gauge

        with self._lock:
            made = self._made.get(name)
            if made is None:
                kind, help_text = self._meta.get(name, (kind, name))
                if kind == "gauge":
                    made = Gauge(name, help_text, labels, registry=self.registry,
                                 multiprocess_mode="max")
                else:
                    made = Counter(name, help_text, labels, registry=self.registry)
                self._made[name] = made
        return made

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        metric = self._metric(name, tuple(sorted(labels)))
        (metric.labels(**labels) if labels else metric).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        metric = self._metric(name, tuple(sorted(labels)), "gauge")
        (metric.labels(**labels) if labels else metric).set(value)

    def render(self) -> str:
        """The Prometheus text format: every process's values in multiprocess mode."""
        from prometheus_client import CollectorRegistry, generate_latest

        if self.multiprocess_dir is None:
            return generate_latest(self.registry).decode()
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry).decode()
