"""``datahubsync logs ...``: ship IPs from hourly sinkhole logs (once, run, test, status, stats)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from datahubsync.cli.runner import AppContext, json_option, run_command
from datahubsync.core.errors import EXIT_STATUS_HELP, ExitCode
from datahubsync.core.timeutil import show_time

STATUS_HELP = ("\b\nExit status (status): 0 healthy, 1 warning, 2 severe (queue depth or size "
               "over the thresholds in logs.health_*).")


@click.group()
def logs() -> None:
    """Ship the IPs found in hourly sinkhole logs to the ingest endpoint, at least once.

    \b
    datahubsync logs once      # one pass (cron)
    datahubsync logs run       # every logs.upload_interval (systemd)
    datahubsync logs status    # queue, files, health (0/1/2 for monitoring)
    """


def _uploader(loaded: Any) -> Any:
    from datahubsync.core.http import make_session
    from datahubsync.logs.uploader import Uploader

    return Uploader(loaded.config.logs, make_session())


def _pass(app: AppContext, flush: bool, listing: Any = None) -> Any:
    from datahubsync.logs.service import Listing, one_pass, open_queue

    loaded = app.config()
    cfg = loaded.config.logs
    listing = listing or Listing(cfg.log_dir, cfg.pattern, cfg.listing_ttl)
    with open_queue(loaded) as queue:
        return one_pass(loaded, queue, listing, _uploader(loaded), flush)


@logs.command(epilog=EXIT_STATUS_HELP)
@json_option
@click.pass_obj
@run_command(report="logs once", lock=lambda layout: layout.logs_lock)
def once(app: AppContext) -> int:
    """Read what is new in every log file, queue it, upload everything queued."""
    from datahubsync.logs.service import fleet_view, open_queue
    from datahubsync.logs.service import status as get_status

    loaded = app.config()
    try:
        result = _pass(app, flush=True)
    finally:
        with open_queue(loaded) as queue:
            app.report("logs", fleet_view(get_status(loaded, queue)))
    app.emit({"message_type": "logs_pass", **asdict(result)},
             lambda: f"{result.files} files, {result.lines} lines, {result.ips} IPs, "
                     f"{result.queued} new, {result.duplicates} duplicates; uploaded "
                     f"{result.uploaded} in {result.batches} batches; {result.pending} queued")
    return ExitCode.OK


@logs.command(epilog=EXIT_STATUS_HELP)
@click.pass_obj
@run_command
def run(app: AppContext) -> int:
    """Pass after pass, every logs.upload_interval seconds (systemd: READY/WATCHDOG).

    A failed upload leaves the records queued for the next pass; a refused key
    or source (401/403) stops with exit 2.
    """
    from datahubsync.logs.service import run_service

    loaded = app.config()
    return run_service(loaded, _uploader(loaded))


@logs.command(epilog=STATUS_HELP)
@json_option
@click.pass_obj
@run_command
def status(app: AppContext) -> int:
    """Health from records waiting, their size and uploads failed in a row; files, offsets."""
    from datahubsync.logs.service import open_queue
    from datahubsync.logs.service import status as get_status

    loaded = app.config()
    with open_queue(loaded) as queue:
        doc = get_status(loaded, queue)
    app.emit({"message_type": "logs_status", **doc},
             lambda: f"health: {doc['health']}; {doc['pending']} records waiting "
                     f"({doc['pending_bytes'] / 1e6:.1f} MB); uploads failed in a row: "
                     f"{doc['upload_errors']}; last upload {show_time(doc['last_upload'])}; "
                     f"{doc['cached_ips']} addresses sent before (not sent again); "
                     f"{len(doc['files'])} files, {doc['incomplete_files']} not finished")
    return int(doc["exit_code"])


@logs.command("queue", epilog=EXIT_STATUS_HELP)
@click.option("--purge", is_flag=True, help="Drop every record waiting to be sent")
@click.option("--yes", is_flag=True, help="Do not ask before --purge (for scripts)")
@json_option
@click.pass_obj
@run_command(lock=lambda layout: layout.logs_lock)
def queue_(app: AppContext, purge: bool, yes: bool) -> int:
    """Show what waits to be sent; with --purge, drop it (after asking).

    Dropped records are never sent: their addresses stay in the seen-set, so
    they are not read again either. Use it when the endpoint will never take
    them (a retired botnet type, a test run against the wrong server).
    """
    from datahubsync.logs.service import open_queue, pending_view

    loaded = app.config()
    with open_queue(loaded) as queue:
        doc = pending_view(queue)
        if purge and doc["pending"]:
            if not yes:
                click.confirm(f"drop {doc['pending']} records waiting to be sent "
                              f"({doc['pending_bytes'] / 1e6:.1f} MB)? They will never be sent",
                              abort=True, err=True)
            doc["purged"] = queue.purge()
    app.emit({"message_type": "logs_queue", **doc},
             lambda: f"{doc['pending']} records waiting ({doc['pending_bytes'] / 1e6:.1f} MB)"
                     + (f"; oldest: {doc['oldest'].get('ip')} from {doc['oldest'].get('date')}"
                        if doc["oldest"] else "")
                     + (f"; dropped {doc['purged']}" if "purged" in doc else ""))
    return ExitCode.OK


@logs.command(epilog=EXIT_STATUS_HELP)
@json_option
@click.pass_obj
@run_command
def stats(app: AppContext) -> int:
    """Totals and per day: lines, IPs, queued, intra-day and global duplicates, uploaded."""
    from datahubsync.logs.service import open_queue
    from datahubsync.logs.service import stats as get_stats

    with open_queue(app.config()) as queue:
        doc = get_stats(queue)
    t = doc["totals"]
    app.emit({"message_type": "logs_stats", **doc},
             lambda: f"{t['ips']} IPs: {t['queued']} queued, {t['dup_day']} intra-day and "
                     f"{t['dup_global']} global duplicates (dedupe {doc['dedupe_rate']:.1%}); "
                     f"{t['uploaded']} uploaded")
    return ExitCode.OK


@logs.command(epilog=EXIT_STATUS_HELP)
@click.option("--sample", default="2025-12-09 16:00:01 GET /x from 091.198.2.1:4433",
              show_default=True, help="A log line to try the extraction on")
@json_option
@click.pass_obj
@run_command
def test(app: AppContext, sample: str) -> int:
    """Check the config, the IP extraction on a sample line, and the endpoint with its key.

    Sends an empty batch (nothing is stored); 401/403 exit 2. On the first
    256 KiB of the newest log file: warns when logs.ip_regex misses addresses
    the generic search finds, and, without ip_regex, suggests an anchored one
    when every address follows the same word (it scans ~5x faster).
    """
    from datahubsync.logs.selfcheck import self_check

    loaded = app.config()
    cfg = loaded.config.logs
    doc = self_check(loaded, _uploader(loaded), sample)
    check, log_file = doc["ip_regex_check"], doc["log_file"]

    def text() -> str:
        lines = [f"sample: {doc['sample_ips']}"]
        if check is not None and check.get("missed"):
            lines.append(f"warning: logs.ip_regex misses {check['missed']} of the "
                         f"{check['addresses']} addresses in the start of {log_file} "
                         f"(e.g. {', '.join(check['examples'])}): they would not be sent")
        elif check is not None and "suggested_ip_regex" in check:
            lines.append(f"hint: every address in the start of {log_file} follows the same "
                         f"word; logs.ip_regex: '{check['suggested_ip_regex']}' scans ~5x "
                         "faster")
        lines.append(f"endpoint {cfg.api_endpoint}: ok (key accepted, source "
                     f"{doc['source_ip']})")
        return "\n".join(lines)

    app.emit({"message_type": "logs_test", **doc}, text)
    return ExitCode.OK
