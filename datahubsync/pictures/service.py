"""``pictures run``: the worker as a service (``core.service``), woken by pushes.

Passes every ``poll_interval`` (sooner when a retry falls due, at once when
``serve`` stores a pushed picture or a result: it pokes ``wake.sock``), exits 1
through :class:`~core.service.StalledError` when nothing moved for
``stall_timeout`` while work waited, 0 on SIGTERM. ``--supervise`` (hosts
without systemd) runs it as a child process and restarts it when it fails.
"""

from __future__ import annotations

from typing import Any

from datahubsync.core.config import LoadedConfig
from datahubsync.core.locking import hold_lock
from datahubsync.core.report import ServiceReporter
from datahubsync.core.service import ServiceLoop
from datahubsync.core.wakeup import Wakeup
from datahubsync.pictures.worker import Worker, make_source, make_transport, open_ledger


def open_worker(loaded: LoadedConfig, heartbeat: Any = None) -> Worker:
    cfg = loaded.config.pictures
    return Worker(loaded, open_ledger(loaded), make_source(cfg), make_transport(cfg),
                  heartbeat=heartbeat)


def run_service(loaded: LoadedConfig) -> int:
    """Serve until SIGTERM (0) or a stall (StalledError); under the pictures lock."""
    cfg = loaded.config.pictures
    layout = loaded.layout
    with hold_lock(layout.pictures_lock):
        wakeup = Wakeup(layout.pictures_wakeup)
        loop = ServiceLoop("pictures", cfg.poll_interval, cfg.stall_timeout,
                           sleep=wakeup.sleep,
                           report=ServiceReporter(loaded, "pictures run",
                                                  loaded.config.fleet.service_report_every))
        worker = open_worker(loaded, heartbeat=loop.heartbeat)
        try:
            return loop.run(worker.service_pass)
        finally:
            wakeup.close()
            worker.transport.close()
            worker.ledger.close()


def supervise_argv(config_path: str | None, log_level: str | None) -> list[str]:
    """The child's arguments for ``pictures run --supervise`` (the same config and level)."""
    argv = ["pictures", "run"]
    if config_path:
        argv = ["--config", config_path, *argv]
    if log_level:
        argv = ["--log-level", log_level.lower(), *argv]
    return argv
