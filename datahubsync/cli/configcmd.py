"""``datahubsync config ...``: check the config, list what each unit may write."""

from __future__ import annotations

from pathlib import Path

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


@config_group.command("upgrade-from", epilog=EXIT_STATUS_HELP)
@click.argument("old_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--to", "config_path", required=True, type=click.Path(dir_okay=False,
              path_type=Path), help="Where our config goes (kept when it exists)")
@click.option("--state-dir", default="/var/lib/datahubsync", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The state_dir the new config names")
@click.option("--write-state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write state files now (default: --state-dir; differs when "
                   "installing into a directory tree)")
@click.option("--uploader-dir", default="/tmp", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Where the old log uploader kept its offsets and queue")
@click.option("--dry-run", is_flag=True, help="Say what would be carried over, change nothing")
@json_option
@click.pass_obj
@run_command
def upgrade_from_(app: AppContext, old_dir: Path, config_path: Path, state_dir: Path,
                  write_state_dir: Path | None, uploader_dir: Path, dry_run: bool) -> int:
    """Carry over the old client in OLD_DIR (its config.yaml, .last_sync.json, ...).

    The first sync after the upgrade then downloads nothing that is installed
    and up to date. Nothing of the old files is changed or deleted; nothing of
    ours that exists is overwritten. `install_client.sh` runs this when it
    finds an old client.
    """
    from datahubsync.upgrade import upgrade_from

    done = upgrade_from(old_dir, config_path, state_dir, uploader_dir=uploader_dir,
                        dry_run=dry_run, write_state_dir=write_state_dir)
    app.emit({"message_type": "upgrade", "dry_run": dry_run, "carried": done.carried,
              "skipped": done.skipped},
             lambda: "\n".join([f"carried over: {c}" for c in done.carried]
                               + [f"left alone: {c}" for c in done.skipped])
             or f"nothing of an old client found in {old_dir}")
    return ExitCode.OK
