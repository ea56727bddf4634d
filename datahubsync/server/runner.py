"""Runs the ``serve`` app: bind, announce readiness, stop gracefully on SIGTERM.

On SIGTERM or SIGINT the listening socket closes first, in-flight responses
get up to ``shutdown_timeout`` seconds to finish, and the process exits 0,
which is what systemd expects from ``systemctl stop``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from aiohttp import web

from datahubsync.core.config import LoadedConfig
from datahubsync.core.sdnotify import notify
from datahubsync.core.statefile import write_bytes_atomic
from datahubsync.server.app import create_app

log = logging.getLogger(__name__)


async def _serve(loaded: LoadedConfig, port_file: Path | None) -> None:
    cfg = loaded.config.serve
    ready = asyncio.Event()
    app = create_app(loaded, on_ready=ready.set)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=cfg.shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else cfg.port
    log.info("serving on http://%s:%d (data_root %s)", cfg.host, port, cfg.data_root)
    if port_file is not None:
        write_bytes_atomic(port_file, f"{port}\n".encode())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.create_task(ready.wait())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if ready.is_set():
        notify("READY=1")
        notify(f"STATUS=serving on port {port}")
    await stopper
    waiter.cancel()
    log.info("stopping: finishing in-flight requests (up to %.0fs)", cfg.shutdown_timeout)
    notify("STOPPING=1")
    await runner.cleanup()
    log.info("stopped")


def run_server(loaded: LoadedConfig, port_file: Path | None = None) -> None:
    """Serve until SIGTERM/SIGINT."""
    asyncio.run(_serve(loaded, port_file))
