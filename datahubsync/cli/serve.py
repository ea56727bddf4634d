"""``datahubsync serve``: the hub (datasets API and packages)."""

from __future__ import annotations

from pathlib import Path

import click

from datahubsync.cli.runner import AppContext, run_command
from datahubsync.core.errors import EXIT_STATUS_HELP


@click.command(epilog=EXIT_STATUS_HELP)
@click.option("--host", help="Address to listen on (serve.host)")
@click.option("--port", type=int, help="Port to listen on, 0 for any free port (serve.port)")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path),
              help="Directory whose sub-directories are the datasets (serve.data_root)")
@click.option("--workers", type=click.IntRange(min=1),
              help="Server processes sharing the port (serve.workers; default: cores)")
@click.option("--port-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the port actually bound to this file once listening")
@click.pass_obj
@run_command
def serve(app: AppContext, host: str | None, port: int | None, data_root: Path | None,
          workers: int | None, port_file: Path | None) -> int:
    """Serve datasets to clients and build their packages in the background.

    Packages are rebuilt when a dataset changes enough (serve.newer_ratio of
    its files) and has settled for serve.debounce seconds. Routes: /health,
    /api/datasets, /package/NAME.zip (Range, If-Range, ETag, HEAD), /metrics.
    SIGTERM stops accepting, lets in-flight responses finish, and exits 0.
    """
    loaded = app.config()
    serve_cfg = loaded.config.serve
    if host is not None:
        serve_cfg.host = host
    if port is not None:
        serve_cfg.port = port
    if workers is not None:
        serve_cfg.workers = workers
    if data_root is not None:
        serve_cfg.data_root = data_root.resolve()
    from datahubsync.server.runner import run_server  # aiohttp only when serving

    return run_server(loaded, port_file)
