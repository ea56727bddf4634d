"""``datahubsync serve``: the hub (datasets API and packages); ``serve nginx-config``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from datahubsync.cli.runner import AppContext, _set_root, json_option, run_command
from datahubsync.core.errors import EXIT_STATUS_HELP, ConfigError

OVERRIDES = "serve_overrides"


def _apply(app: AppContext, overrides: dict[str, Any]) -> Any:
    """The config, with the command-line options of ``serve`` applied."""
    loaded = app.config()
    serve_cfg = loaded.config.serve
    if overrides.get("host") is not None:
        serve_cfg.host = overrides["host"]
    if overrides.get("port") is not None:
        serve_cfg.port = overrides["port"]
    if overrides.get("workers") is not None:
        serve_cfg.workers = overrides["workers"]
    if overrides.get("data_root") is not None:
        serve_cfg.data_root = overrides["data_root"].resolve()
    return loaded


@run_command
def _run(app: AppContext, overrides: dict[str, Any], port_file: Path | None) -> int:
    loaded = _apply(app, overrides)
    from datahubsync.server.runner import run_server  # aiohttp only when serving

    return run_server(loaded, port_file)


@click.group(invoke_without_command=True, epilog=EXIT_STATUS_HELP)
@click.option("--host", help="Address to listen on (serve.host)")
@click.option("--port", type=int, help="Port to listen on, 0 for any free port (serve.port)")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path),
              help="Directory whose sub-directories are the datasets (serve.data_root)")
@click.option("--workers", type=click.IntRange(min=1),
              help="Server processes sharing the port (serve.workers; default: cores)")
@click.option("--port-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the port actually bound to this file once listening")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), expose_value=False,
              callback=_set_root("config_path"), help="Config file (as before the command name)")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"],
                                               case_sensitive=False),
              expose_value=False, callback=_set_root("log_level"),
              help="Override logging.level (as before the command name)")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, data_root: Path | None,
          workers: int | None, port_file: Path | None) -> None:
    """Serve datasets to clients and build their packages in the background.

    Packages are rebuilt when a dataset changes enough (serve.newer_ratio of
    its files) and has settled for serve.debounce seconds. Routes: /health,
    /api/datasets, /package/NAME.zip (Range, If-Range, ETag, HEAD), /metrics.
    SIGTERM stops accepting, lets in-flight responses finish, and exits 0.

    Without a sub-command, runs the server.
    """
    overrides = {"host": host, "port": port, "data_root": data_root, "workers": workers}
    ctx.meta[OVERRIDES] = overrides
    if ctx.invoked_subcommand is None:
        _run(ctx.find_object(AppContext) or AppContext(), overrides, port_file)


@serve.command("nginx-config", epilog=EXIT_STATUS_HELP)
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory for datahubsync.conf and datahubsync-tokens.conf (0600)")
@click.option("--listen", default="80", show_default=True,
              help="nginx listen parameter, e.g. 80, 127.0.0.1:8081, [::]:80")
@click.option("--upstream", help="serve's host:port as nginx reaches it; several instances "
                                 "side by side: comma-separated (default: serve.host:serve.port, "
                                 "a wildcard host as loopback)")
@click.option("--file-cache-valid", type=click.IntRange(min=0), default=1, show_default=True,
              metavar="SECONDS",
              help="/files: nginx keeps open descriptors and stats of pictures this long "
                   "(open_file_cache); a picture replaced within it may be answered as it "
                   "was; 0 = off")
@json_option
@click.pass_context
@run_command
def nginx_config(ctx: click.Context, out_dir: Path, listen: str, upstream: str | None,
                 file_cache_valid: int) -> int:
    """Write an nginx front-end: files from disk, the rest proxied to serve.

    nginx serves /package/NAME.zip and /manifest/NAME.json (through the links
    serve keeps in {cache_dir}/current/), /delta/... and /files/... (same
    roots, confinement and token check as serve) with sendfile; /api, /health,
    /metrics and the rest go to serve. Include datahubsync.conf in nginx's http
    block; the tokens are only in datahubsync-tokens.conf (mode 0600). serve
    must list nginx's address in serve.trusted_proxies.
    """
    from datahubsync.server import nginxconf

    app: AppContext = ctx.find_object(AppContext) or AppContext()
    loaded = _apply(app, ctx.meta.get(OVERRIDES, {}))
    cfg = loaded.config.serve
    cache_dir = cfg.cache_dir or loaded.state_dir / "packages"
    try:
        settings = nginxconf.settings_from(cfg, cache_dir, listen, upstream, out_dir,
                                           file_cache_valid)
        main, tokens = nginxconf.write_config(settings)
    except (nginxconf.NginxConfigError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    warnings = []
    if not nginxconf.proxy_trusted(settings.upstream, cfg.trusted_proxies):
        warnings.append("serve.trusted_proxies does not list nginx's address (e.g. "
                        "127.0.0.1/32): requests through nginx will not count as "
                        "serve.trusted_networks and need a token")
    if not cfg.api_tokens and cfg.picture_roots:
        warnings.append("serve.api_tokens is empty: every /files request gets 401")
    document = {"config": str(main), "tokens": str(tokens), "listen": listen,
                "upstream": settings.upstream, "cache_dir": settings.cache_dir,
                "picture_roots": len(settings.roots), "warnings": warnings}
    app.emit(document, lambda: "\n".join(
        [f"wrote {main}", f"wrote {tokens} (mode 0600: the tokens /files accepts)",
         f"upstream {settings.upstream}; include {main} in nginx's http block, then "
         "`nginx -t` and reload"] + [f"warning: {w}" for w in warnings]))
    return 0
