"""The ``datahubsync`` command: root options and explicit registration of every group.

Groups are added with ``add_command`` here, not by import side effects, so
nothing silently drops out of the frozen binary.
"""

from __future__ import annotations

import click

from datahubsync import __version__
from datahubsync.cli.batch import batch
from datahubsync.cli.configcmd import config_group
from datahubsync.cli.datasets import datasets
from datahubsync.cli.doctor import doctor
from datahubsync.cli.fleet import fleet
from datahubsync.cli.logs import logs
from datahubsync.cli.pictures import pictures
from datahubsync.cli.runner import AppContext, accept_root_options, json_option
from datahubsync.cli.serve import serve
from datahubsync.core.errors import EXIT_STATUS_HELP

LOG_LEVELS = click.Choice(["debug", "info", "warning", "error"], case_sensitive=False)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_STATUS_HELP,
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              envvar="DATAHUBSYNC_CONFIG",
              help="Config file (default /etc/datahubsync/config.yaml, then ./config.yaml)")
@click.option("--log-level", type=LOG_LEVELS, help="Override logging.level from the config")
@click.option("--json", "json_output", is_flag=True, help="Print results as JSON")
@click.option("--json-lines", is_flag=True,
              help="Print JSON, one object per line (progress, then the result)")
@click.option("--metrics-file", type=click.Path(dir_okay=False),
              help="Write node_exporter textfile metrics of the run here (fleet.metrics_file)")
@click.version_option(__version__, "--version", prog_name="datahubsync")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str | None,
        json_output: bool, json_lines: bool, metrics_file: str | None) -> None:
    """Keep a fleet of servers fed with data: datasets from a hub, and the hub itself.

    \b
    Typical use:
      datahubsync datasets sync          # cron, 08:15
      datahubsync serve                  # systemd service on the hub
      datahubsync doctor                 # what is wrong with this host's setup
    """
    ctx.obj = AppContext(config_path, log_level.upper() if log_level else None,
                         json_output or json_lines, metrics_file, json_lines)


@cli.command()
@click.option("--verbose", "-v", is_flag=True,
              help="Also list package versions and check every database driver")
@json_option
@click.pass_obj
def version(app: AppContext, verbose: bool) -> None:
    """Print the version (with --verbose: what this build contains)."""
    if not verbose:
        app.emit({"version": __version__}, lambda: f"datahubsync {__version__}")
        return
    from datahubsync.core.drivers import build_info, check_drivers

    info = {"version": __version__, **build_info(), "drivers": check_drivers()}
    lines = [f"datahubsync {__version__} (Python {info['python']}, "
             f"{'frozen' if info['frozen'] else 'not frozen'})"]
    lines += [f"  {k} {v or 'MISSING'}" for k, v in info["packages"].items()]
    lines += [f"  driver {k}: {'ok ' + d['driver'] if d['ok'] else 'FAILED ' + d['error']}"
              for k, d in info["drivers"].items()]
    app.emit(info, lambda: "\n".join(lines))
    if not all(d["ok"] for d in info["drivers"].values()):
        raise SystemExit(1)


cli.add_command(datasets)
cli.add_command(serve)
cli.add_command(doctor)
cli.add_command(batch)
cli.add_command(logs)
cli.add_command(pictures)
cli.add_command(config_group)
cli.add_command(fleet)
accept_root_options(cli)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="datahubsync")
