"""``datahubsync config ...``: check the config, list what each unit may write."""

from __future__ import annotations

import click

from datahubsync.cli.runner import AppContext, json_option, run_command
from datahubsync.core.errors import EXIT_STATUS_HELP, ExitCode


@click.group("config")
def config_group() -> None:
    """Check the configuration; derive what the systemd units may write from it."""


@config_group.command(epilog=EXIT_STATUS_HELP)
@json_option
@click.pass_obj
@run_command
def check(app: AppContext) -> int:
    """Load and validate the config (exit 2 naming the key when it is wrong)."""
    loaded = app.config()
    app.emit({"message_type": "config_check", "source": str(loaded.source),
              "sections": sorted(loaded.sections)},
             lambda: f"{loaded.source or 'defaults'}: valid "
                     f"({', '.join(sorted(loaded.sections)) or 'no sections'})")
    return ExitCode.OK


@config_group.command("write-paths", epilog=EXIT_STATUS_HELP)
@click.option("--unit", type=click.Choice(["sync", "serve", "pictures", "logs"]),
              required=True, help="The systemd unit (datahubsync-UNIT.service)")
@click.option("--systemd", is_flag=True,
              help="Print a drop-in: [Service] ReadWritePaths=... (missing paths with '-')")
@json_option
@click.pass_obj
@run_command
def write_paths_(app: AppContext, unit: str, systemd: bool) -> int:
    """The directories UNIT writes, from the config: its ReadWritePaths=.

    The units run with ProtectSystem=strict, so a path the config names but the
    unit may not write fails the service at its first write; `install_client.sh
    --setup-systemd` installs these as drop-ins. Read-only inputs are not listed.
    """
    from datahubsync.core.writepaths import write_paths
    from datahubsync.features import WRITE_PATHS

    found = write_paths(app.config(), unit, WRITE_PATHS)
    if systemd and not app.json:
        click.echo("[Service]\nReadWritePaths=" + " ".join(
            str(w.path) if w.path.exists() else f"-{w.path}" for w in found))
        return ExitCode.OK
    app.emit({"message_type": "write_paths", "unit": unit,
              "paths": [{"path": str(w.path), "why": w.why} for w in found]},
             lambda: "\n".join(f"{w.path}  ({w.why})" for w in found))
    return ExitCode.OK
