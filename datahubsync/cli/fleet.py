"""``datahubsync fleet ...``: is every server ready (for monitoring), test the alerts."""

from __future__ import annotations

import click

from datahubsync.cli.runner import AppContext, json_option, render_table, run_command
from datahubsync.core.errors import ExitCode, UsageError
from datahubsync.core.timeutil import show_time

FLEET_EXIT_HELP = (
    "\b\nExit status:\n"
    "  0   every host is ready (holds every current version, nothing wrong)\n"
    "  1   some host is not: waiting, late, failed or silent\n"
    "  2   usage or configuration error (or the hub refused the token)\n"
    "  75  the hub is unreachable"
)


@click.group()
def fleet() -> None:
    """The hub's view of its fleet: which servers hold today's data, and alerts.

    \b
    datahubsync fleet status          # one line per host; exit 0 only when all are ready
    datahubsync fleet status --json   # the same as /api/v1/fleet
    datahubsync fleet test-alert      # a test message through every configured channel
    """


@fleet.command(epilog=FLEET_EXIT_HELP)
@click.option("--at", metavar="ISO-8601", help="Judge as of this moment (e.g. 09:00 today)")
@json_option
@click.pass_obj
@run_command
def status(app: AppContext, at: str | None) -> int:
    """Each host's state from the hub: ready, waiting, late, failed or silent, and why."""
    from datahubsync.fleet.client import fetch_status

    doc = fetch_status(app.config(), at)
    hosts = doc["hosts"]
    app.emit({"message_type": "fleet_status", **doc}, lambda: render_table(
        ["HOST", "STATE", "LAST REPORT", "WHY"],
        [[h["host"], h["state"], show_time(h.get("last_report"), "never"),
          "; ".join(h.get("reasons") or []) or "-"] for h in hosts]) if hosts
        else "no host has reported yet")
    return ExitCode.OK if hosts and all(h["colour"] == "green" for h in hosts) \
        else ExitCode.PARTIAL


@fleet.command("test-alert")
@json_option
@click.pass_obj
@run_command
def test_alert(app: AppContext) -> int:
    """Send a test message through every channel of fleet.alerts (webhooks, mail).

    Exits 1 when a channel failed (each failure is shown), 2 when none is configured.
    """
    import socket
    import time

    from datahubsync.fleet.alerts import Alert, send

    cfg = app.config().config.fleet.alerts
    if not cfg.webhooks and cfg.smtp is None:
        raise UsageError("fleet.alerts: no webhook and no smtp configured")
    alert = Alert("test", "test", socket.gethostname(),
                  "a test message from datahubsync fleet test-alert", time.time())
    problems = send(cfg, alert)
    channels = len(cfg.webhooks) + (cfg.smtp is not None)
    app.emit({"message_type": "test_alert", "channels": channels, "failed": problems},
             lambda: "\n".join(problems) or f"sent through {channels} channel(s)")
    return ExitCode.PARTIAL if problems else ExitCode.OK
