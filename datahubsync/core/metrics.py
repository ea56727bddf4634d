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

Each ``inc`` on a multiprocess value takes a lock, checks the pid and writes the
mmap: a fifth of a worker's CPU when a 200 KB picture costs six of them. With
``flush_every`` (serve: 0.5 s) values gather in a dict and reach the files at most
that often, when a scrape is answered here, and at the end (``flush``; the
server also flushes on a timer, so an idle worker's last counts are not held):
a scrape may lag the truth by that much, as any scrape of a live counter does.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
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

    def __init__(self, flush_every: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from prometheus_client import CollectorRegistry, disable_created_metrics

        disable_created_metrics()  # *_created series: noise for counters that live with serve
        self.multiprocess_dir = os.environ.get(ENV) or None
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._meta: dict[str, tuple[str, str]] = {}
        self._made: dict[str, Any] = {}
        self.flush_every, self.clock = flush_every, clock
        self._flushed = clock()
        self._pending_lock = threading.Lock()
        self._added: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

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
        if self.flush_every <= 0:
            self._inc_now(name, amount, labels)
            return
        key = (name, tuple(sorted(labels.items())))
        with self._pending_lock:
            self._added[key] = self._added.get(key, 0.0) + amount
        self._flush_if_due()

    def set(self, name: str, value: float, **labels: str) -> None:
        if self.flush_every <= 0:
            self._set_now(name, value, labels)
            return
        with self._pending_lock:
            self._values[(name, tuple(sorted(labels.items())))] = value
        self._flush_if_due()

    def _inc_now(self, name: str, amount: float, labels: dict[str, str]) -> None:
        metric = self._metric(name, tuple(sorted(labels)))
        (metric.labels(**labels) if labels else metric).inc(amount)

    def _set_now(self, name: str, value: float, labels: dict[str, str]) -> None:
        metric = self._metric(name, tuple(sorted(labels)), "gauge")
        (metric.labels(**labels) if labels else metric).set(value)

    def _flush_if_due(self) -> None:
        if self.clock() - self._flushed >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write what ``inc`` and ``set`` gathered to the shared values."""
        with self._pending_lock:
            added, self._added = self._added, {}
            values, self._values = self._values, {}
            self._flushed = self.clock()
        for (name, labels), amount in added.items():
            self._inc_now(name, amount, dict(labels))
        for (name, labels), value in values.items():
            self._set_now(name, value, dict(labels))

    def render(self) -> str:
        """The Prometheus text format: every process's values in multiprocess mode."""
        from prometheus_client import CollectorRegistry, generate_latest

        self.flush()
        if self.multiprocess_dir is None:
            return generate_latest(self.registry).decode()
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry).decode()
