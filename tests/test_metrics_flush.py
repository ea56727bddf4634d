"""serve's counters gather in the process and reach the shared values at most every
``flush_every`` seconds, at a scrape, or at the end: nothing is lost on the way."""

from __future__ import annotations

from datahubsync.core.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_counts_are_held_until_due_then_all_written() -> None:
    clock = Clock()
    metrics = Metrics(flush_every=0.5, clock=clock)
    metrics.describe("t_requests_total", "counter", "test")
    metrics.inc("t_requests_total", route="/a")
    metrics.inc("t_requests_total", 2, route="/a")
    metrics.set("t_last_seconds", 7.0)
    assert _value(metrics, "t_requests_total", route="/a") is None  # not yet written
    clock.now += 0.6
    metrics.inc("t_requests_total", route="/b")  # due: everything gathered goes out
    assert _value(metrics, "t_requests_total", route="/a") == 3
    assert _value(metrics, "t_requests_total", route="/b") == 1
    assert _value(metrics, "t_last_seconds") == 7.0


def test_a_scrape_or_flush_writes_what_is_pending() -> None:
    clock = Clock()
    metrics = Metrics(flush_every=60, clock=clock)
    metrics.describe("t_bytes_total", "counter", "test")
    for _ in range(5):
        metrics.inc("t_bytes_total", 10)
    assert "t_bytes_total 50.0" in metrics.render()
    metrics.inc("t_bytes_total", 1)
    metrics.flush()
    assert _value(metrics, "t_bytes_total") == 51


def test_without_flush_every_each_inc_is_written_at_once() -> None:
    metrics = Metrics()
    metrics.inc("t_now_total", 4)
    assert _value(metrics, "t_now_total") == 4
