"""``datahubsync doctor``: check this host's setup and say what to fix."""

from __future__ import annotations

import click

from datahubsync.cli.runner import AppContext, json_option, run_command
from datahubsync.core.errors import EXIT_STATUS_HELP, ExitCode


@click.command(epilog=EXIT_STATUS_HELP)
@click.option("--min-free", default=1024, show_default=True, metavar="MIB",
              help="Warn when a data directory has less free space than this")
@json_option
@click.pass_obj
@run_command
def doctor(app: AppContext, min_free: int) -> int:
    """Check the config and every configured section; print what to fix.

    \b
    Always: the config, state_dir and the log file directory (writable, free disk).
    datasets: each local_dir, the hub (reachable, clock skew); serve.data_root.
    logs: the log directory and its files, the queue and its health, the endpoint.
    pictures: task table, picture server, mirror, ledger; serve's last picture send.
    batch: each pg-copy job's table, the trading calendar.

    Exits 0 when every check passes, 1 when any fails, 2 when the config
    itself is invalid.
    """
    from datahubsync.core.doctor import run_checks
    from datahubsync.features import DOCTOR_CHECKS

    loaded = app.config()
    checks = run_checks(loaded, min_free * 1024 * 1024, DOCTOR_CHECKS)
    failed = [c for c in checks if not c.ok]
    app.emit({"message_type": "doctor", "ok": not failed,
              "checks": [c.__dict__ for c in checks]},
             lambda: "\n".join(f"{'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}"
                               + ("" if c.ok or not c.fix else f"\n      fix: {c.fix}")
                               for c in checks))
    return ExitCode.PARTIAL if failed else ExitCode.OK
