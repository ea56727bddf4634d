"""A tiny Prometheus text-format registry, one per process (held by the app, not global)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from typing import Any


class Metrics:
    """Counters and gauges with labels, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._meta: dict[str, tuple[str, str]] = {}

    def describe(self, name: str, kind: str, help_text: str) -> None:
        """Declare a metric so it is rendered (with HELP/TYPE) even before any sample."""
        self._meta[name] = (kind, help_text)
        self._values.setdefault(name, {})

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][tuple(sorted(labels.items()))] = value

    def value(self, name: str, **labels: str) -> float:
        return self._values.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def snapshot(self) -> list[list[Any]]:
        """The counters as JSON-able rows ``[name, labels, value]`` (for other processes)."""
        with self._lock:
            return [[name, dict(labels), value] for name, series in self._values.items()
                    for labels, value in series.items()]

    def render(self, others: Iterable[list[list[Any]]] = ()) -> str:
        """Prometheus text; ``others`` are snapshots of sibling processes, summed in."""
        with self._lock:
            merged = {name: dict(series) for name, series in self._values.items()}
        for snapshot in others:
            for name, labels, value in snapshot:
                key = tuple(sorted(labels.items()))
                series = merged.setdefault(name, {})
                if self._meta.get(name, ("counter",))[0] == "counter":
                    series[key] = series.get(key, 0.0) + float(value)
                else:  # a gauge is set by one process (the builder): take its value
                    series.setdefault(key, float(value))
        lines: list[str] = []
        for name in sorted(merged):
            kind, help_text = self._meta.get(name, ("untyped", name))
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in sorted(merged[name].items()):
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                shown = int(value) if float(value).is_integer() else value
                lines.append(f"{name}{{{text}}} {shown}" if text else f"{name} {shown}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
