"""``datahubsync pictures ...``: fetch every picture of every task (run, once, status, ...)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from datahubsync.cli.runner import AppContext, json_option, render_table, run_command
from datahubsync.core.errors import EXIT_STATUS_HELP, ExitCode
from datahubsync.core.timeutil import show_time, show_value


@click.group()
def pictures() -> None:
    """Fetch the pictures of every task into the local mirror; lose none.

    \b
    datahubsync pictures run          # systemd service: poll, fetch, process, report
    datahubsync pictures once         # one pass (cron, or by hand)
    datahubsync pictures status       # counts, cursor, files failing or missing
    datahubsync pictures retry --failed
    """


def _cursor(cursor: Any) -> str:
    if not cursor:
        return "none yet"
    if isinstance(cursor, dict):
        return ", ".join(f"{k} {show_value(v)}" for k, v in cursor.items())
    return str(cursor)


def _summary(result: Any) -> str:
    text = (f"{result.new_tasks} new tasks ({result.late_tasks} late); downloaded "
            f"{result.downloaded} ({result.bytes / 1e6:.1f} MB), skipped {result.skipped}, "
            f"missing {result.missing}, failed {result.failed}; processed {result.processed}, "
            f"reported {result.reported}")
    return "\n".join([text, *result.errors])


@pictures.command(epilog=EXIT_STATUS_HELP)
@json_option
@click.pass_obj
@run_command(report="pictures once", lock=lambda layout: layout.pictures_lock)
def once(app: AppContext) -> int:
    """One pass: new tasks from the source, every due file, due processing and callbacks.

    Exits 1 when some file or step failed this pass (it stays in the ledger and
    is retried with backoff); `pictures status` lists them.
    """
    from datahubsync.pictures.service import open_worker

    worker = open_worker(app.config())
    try:
        result = worker.one_pass()
        app.report("pictures", worker.health(), bytes_moved=result.bytes,
                   items_failed=result.failed + result.step_failures)
    finally:
        worker.transport.close()
        worker.ledger.close()
    app.emit({"message_type": "pictures_pass", **asdict(result)}, lambda: _summary(result))
    return ExitCode.PARTIAL if result.failed or result.step_failures else ExitCode.OK


@pictures.command(epilog=EXIT_STATUS_HELP)
@click.option("--supervise", is_flag=True,
              help="Run the worker as a child process and restart it (after "
                   "pictures.supervise_delay) when it fails: for hosts without systemd")
@click.pass_obj
@run_command
def run(app: AppContext, supervise: bool) -> int:
    """Pass after pass (every pictures.poll_interval); systemd READY/WATCHDOG.

    Exits non-zero when nothing moved for pictures.stall_timeout while work was
    waiting, so systemd (Restart=on-failure) starts it afresh. It never
    re-executes itself and never changes PATH.
    """
    loaded = app.config()
    if supervise:
        from datahubsync.pictures.service import supervise_argv
        from datahubsync.pictures.supervise import supervise_worker

        return supervise_worker(supervise_argv(app.config_path, app.log_level),
                                loaded.config.pictures.supervise_delay)
    from datahubsync.pictures.service import run_service

    return run_service(loaded)


@pictures.command(epilog=EXIT_STATUS_HELP)
@click.option("--limit", default=20, show_default=True, help="Problem files to list")
@json_option
@click.pass_obj
@run_command
def status(app: AppContext, limit: int) -> int:
    """Tasks and files by state, the source cursor, and the files failing or missing."""
    from datahubsync.pictures.worker import open_ledger
    from datahubsync.pictures.worker import status as get_status

    with open_ledger(app.config()) as ledger:
        doc = get_status(ledger, limit)

    def text() -> str:
        files, tasks = doc["files"], doc["tasks"]
        lines = ["files: " + ", ".join(f"{k} {v}" for k, v in files.items()),
                 "tasks: " + ", ".join(f"{k} {v}" for k, v in tasks.items()),
                 f"cursor: {_cursor(doc['cursor'])}",
                 f"last pass {show_time(doc['last_pass'])}, last download "
                 f"{show_time(doc['last_download'])}"]
        if doc["problems"]:
            lines.append(render_table(
                ["TASK", "#", "STATE", "ATTEMPTS", "PATH", "LAST ERROR"],
                [[p["task_id"], p["idx"], p["state"], p["attempts"], p["remote"],
                  (p["last_error"] or "")[:80]] for p in doc["problems"]]))
        for task in doc["task_problems"]:
            lines.append(f"task {task['task_id']} ({task['state']}, {task['attempts']} "
                         f"attempts): {task['last_error']}")
        return "\n".join(lines)

    app.emit({"message_type": "pictures_status", **doc}, text)
    return ExitCode.OK


@pictures.command(epilog=EXIT_STATUS_HELP)
@click.argument("task_ids", nargs=-1)
@click.option("--failed", "include_final", is_flag=True,
              help="Also reopen files recorded missing or given up (and failed tasks)")
@json_option
@click.pass_obj
@run_command
def retry(app: AppContext, task_ids: tuple[str, ...], include_final: bool) -> int:
    """Make waiting failures due now (all, or those of TASK_IDS); the next pass tries them."""
    from datahubsync.pictures.worker import open_ledger

    with open_ledger(app.config()) as ledger:
        changed = ledger.retry(list(task_ids) or None, include_final)
    app.emit({"message_type": "pictures_retry", "changed": changed},
             lambda: f"{changed} file(s) and step(s) due now")
    return ExitCode.OK


@pictures.command(epilog=EXIT_STATUS_HELP)
@click.argument("task_id")
@json_option
@click.pass_obj
@run_command
def forget(app: AppContext, task_id: str) -> int:
    """Drop TASK_ID and its files from the ledger (the pictures on disk stay)."""
    from datahubsync.pictures.worker import open_ledger

    with open_ledger(app.config()) as ledger:
        found = ledger.forget(task_id)
    app.emit({"message_type": "pictures_forget", "task_id": task_id, "forgotten": found},
             lambda: f"task {task_id} forgotten" if found else f"task {task_id}: not in the "
                                                                "ledger")
    return ExitCode.OK if found else ExitCode.PARTIAL
