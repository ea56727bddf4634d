"""Runs the ``serve`` app: bind, fork workers, announce readiness, stop on SIGTERM.

With ``serve.workers`` > 1 the parent binds the listening socket once and
forks workers that accept on it (the kernel spreads connections); only the
parent builds packages, every process serves them. On SIGTERM or SIGINT the
listening socket closes first, in-flight responses get up to
``shutdown_timeout`` seconds to finish, and the process exits 0, which is
what systemd expects from ``systemctl stop``. A worker that dies on its own
makes the parent exit non-zero so systemd restarts the whole service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from pathlib import Path

from aiohttp import web

from datahubsync.core.config import LoadedConfig
from datahubsync.core.cpus import usable_cpus
from datahubsync.core.errors import UsageError
from datahubsync.core.metrics import enable_multiprocess
from datahubsync.core.sdnotify import notify
from datahubsync.core.statefile import write_bytes_atomic
from datahubsync.pictures import legacy_tcp
from datahubsync.server.app import create_app
from datahubsync.server.guard import ConnectionGuard, ConnectionLimits, GuardedSite

log = logging.getLogger(__name__)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


async def _serve(loaded: LoadedConfig, sock: socket.socket, primary: bool,
                 children: list[int], port_file: Path | None,
                 legacy_sock: socket.socket | None = None) -> int:
    cfg = loaded.config.serve
    ready = asyncio.Event()
    app = create_app(loaded, build=primary, on_ready=ready.set)
    if legacy_sock is not None:  # bound once below, like the HTTP socket; every process accepts
        legacy_tcp.attach(app, legacy_sock, loaded, announce=primary)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=cfg.shutdown_timeout,
                           keepalive_timeout=cfg.keepalive_timeout)
    await runner.setup()
    guard = ConnectionGuard(ConnectionLimits(cfg.header_timeout, cfg.keepalive_timeout,
                                             cfg.max_connections))
    await GuardedSite(runner, sock, guard).start()
    sweeper = asyncio.create_task(guard.run())
    port = sock.getsockname()[1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    failed = asyncio.Event()
    watch = asyncio.create_task(_watch_children(children, failed)) if children else None
    if primary:
        log.info("serving on http://%s:%d with %d process(es) (data_root %s)", cfg.host, port,
                 1 + len(children), cfg.data_root)
        if port_file is not None:
            write_bytes_atomic(port_file, f"{port}\n".encode())
        waiter = asyncio.create_task(ready.wait())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if ready.is_set():
            notify("READY=1")
            notify(f"STATUS=serving on port {port}")
        waiter.cancel()
    done = {asyncio.create_task(stop.wait()), asyncio.create_task(failed.wait())}
    await asyncio.wait(done, return_when=asyncio.FIRST_COMPLETED)
    if primary:
        log.info("stopping: finishing in-flight requests (up to %.0fs)", cfg.shutdown_timeout)
        notify("STOPPING=1")
    for pid in children:
        _signal(pid, signal.SIGTERM)
    sweeper.cancel()
    await runner.cleanup()
    if watch is not None:
        watch.cancel()
    for pid in children:
        await asyncio.to_thread(_reap, pid)
    if primary:
        log.info("stopped")
    return 1 if failed.is_set() else 0


async def _watch_children(children: list[int], failed: asyncio.Event) -> None:
    while True:
        await asyncio.sleep(1)
        for pid in children:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                log.error("worker %d exited (status %d); stopping so systemd restarts us", pid,
                          status)
                children.remove(pid)
                failed.set()
                return


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _die_with_parent(parent: int) -> None:
    """Linux: SIGTERM this worker when the parent dies, even by SIGKILL.

    Otherwise a killed parent leaves workers holding the port, and the
    restarted service fails with "Address already in use".
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


def run_server(loaded: LoadedConfig, port_file: Path | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    cfg = loaded.config.serve
    workers = cfg.workers or usable_cpus()
    sock = _bind(cfg.host, cfg.port)
    legacy = _bind(cfg.legacy_tcp.host, cfg.legacy_tcp.port) if cfg.legacy_tcp else None
    enable_multiprocess(loaded.layout.metrics)  # before any metric exists, before the fork
    children: list[int] = []
    parent = os.getpid()
    for _ in range(workers - 1):
        pid = os.fork()
        if pid == 0:  # worker: serves, never builds
            code = 70
            _die_with_parent(parent)
            try:
                code = asyncio.run(_serve(loaded, sock, False, [], None, legacy))
            except Exception:  # noqa: BLE001 - report, then exit
                log.exception("worker failed")
            finally:
                os._exit(code)
        children.append(pid)
    try:
        return asyncio.run(_serve(loaded, sock, True, children, port_file, legacy))
    finally:
        sock.close()
        if legacy is not None:
            legacy.close()
