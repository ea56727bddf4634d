"""``datahubsync batch ...``: run, resume, status, list, cancel date-range jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from datahubsync.cli.runner import AppContext, json_option, render_table, run_command
from datahubsync.core.errors import EXIT_STATUS_HELP, ExitCode
from datahubsync.core.timeutil import show_time

BATCH_EXIT_HELP = EXIT_STATUS_HELP.replace(
    "  1   some items failed (the others were done)\n",
    "  1   some days failed, or the task was cancelled\n")


@click.group()
def batch() -> None:
    """Date-range jobs: one unit per day, progress persisted, resumable.

    \b
    Jobs are named in the config (batch.jobs). Examples:
      datahubsync batch run --job stocks --from 2025-10-01 --to 2025-10-31
      datahubsync batch status             # the newest task
      datahubsync batch resume TASK_ID     # after a crash, kill -9 or cancel
    """


def _service(app: AppContext) -> Any:
    from datahubsync.batch.runner import BatchService

    return BatchService(app.config())


def _exit_code(doc: dict[str, Any]) -> int:
    return {"completed": ExitCode.OK, "interrupted": ExitCode.INTERRUPTED}.get(
        doc["status"], ExitCode.PARTIAL)


def _run_with_bar(app: AppContext, doc: dict[str, Any], action: Any) -> dict[str, Any]:
    bar = app.printer.progress(counting=True)
    bar.start(f"{doc['job']} {doc['start_date']}..{doc['end_date']}", doc["total"])
    bar.advance(doc["current"])
    seen = [doc["current"]]

    def on_change(current: dict[str, Any]) -> None:
        bar.advance(current["current"] - seen[0])
        seen[0] = current["current"]

    try:
        return action(on_change)
    finally:
        bar.finish()


@batch.command(epilog=BATCH_EXIT_HELP)
@click.option("--from", "start", required=True, metavar="YYYY-MM-DD", help="First day")
@click.option("--to", "end", required=True, metavar="YYYY-MM-DD", help="Last day (included)")
@click.option("--job", help="Job name from batch.jobs (default: batch.default_job)")
@click.option("--workers", type=click.IntRange(1, 64), help="Days loaded at the same time")
@click.option("--dry-run", is_flag=True, help="Say what each day would do; change nothing")
@click.option("--calendar", type=click.Path(dir_okay=False, path_type=Path),
              help="Trading days, one YYYY-MM-DD per line (default batch.calendar, else Mon-Fri)")
@json_option
@click.pass_obj
@run_command(report="batch run")
def run(app: AppContext, start: str, end: str, job: str | None, workers: int | None,
        dry_run: bool, calendar: Path | None) -> int:
    """Run JOB for every day from --from to --to.

    Non-trading days are skipped, not failed. A day that fails does not stop
    the others. One task at a time per target (exit 75 names the running one).
    Progress is saved after every day: `batch resume TASK_ID` continues an
    interrupted task without redoing finished days.
    """
    from datahubsync.batch.calendar import parse_day

    service = _service(app)
    plan = service.plan(job, parse_day(start, "--from"), parse_day(end, "--to"), workers,
                        calendar)
    if dry_run:
        rows = service.dry_run(plan)
        app.emit({"message_type": "dry_run", "job": plan.job, "days": rows},
                 lambda: "\n".join(f"{r['date']}  {r['action']:<4}  {r['detail']}" for r in rows))
        return ExitCode.OK
    doc = service.create(plan)
    doc = _run_with_bar(app, doc, lambda cb: service.run(doc["task_id"], on_change=cb))
    app.report("batch", _reported(doc), items_failed=int(doc.get("failed") or 0))
    app.emit(dict(doc, message_type="batch_result"), lambda: _summary(doc))
    return _exit_code(doc)


@batch.command(epilog=BATCH_EXIT_HELP)
@click.argument("task_id")
@click.option("--workers", type=click.IntRange(1, 64), help="Days loaded at the same time")
@click.option("--start", "start_only", is_flag=True, hidden=True,
              help="Internal (the API): start a task it created, honouring a cancel request")
@json_option
@click.pass_obj
@run_command(report="batch resume")
def resume(app: AppContext, task_id: str, workers: int | None, start_only: bool) -> int:
    """Continue TASK_ID with the first day not done (after a crash, kill -9 or cancel).

    Days that succeeded or were skipped are not redone; failed, interrupted and
    cancelled days are run again.
    """
    service = _service(app)
    doc = service.store.load(task_id)
    action = service.run if start_only else service.resume
    doc = _run_with_bar(app, doc, lambda cb: action(task_id, workers, on_change=cb))
    app.report("batch", _reported(doc), items_failed=int(doc.get("failed") or 0))
    app.emit(dict(doc, message_type="batch_result"), lambda: _summary(doc))
    return _exit_code(doc)


@batch.command(epilog=EXIT_STATUS_HELP)
@click.argument("task_id", required=False)
@json_option
@click.pass_obj
@run_command
def status(app: AppContext, task_id: str | None) -> int:
    """Show the progress of TASK_ID (default: the newest task)."""
    doc = _service(app).status(task_id)
    app.emit(dict(doc, message_type="batch_status"), lambda: _summary(doc, detail=True))
    return ExitCode.OK


@batch.command("list", epilog=EXIT_STATUS_HELP)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@json_option
@click.pass_obj
@run_command
def list_(app: AppContext, limit: int) -> int:
    """History of batch tasks, newest first, with outcome and duration."""
    rows = _service(app).history(limit)
    app.emit({"message_type": "batch_list", "tasks": rows}, lambda: _history(rows))
    return ExitCode.OK


@batch.command(epilog=EXIT_STATUS_HELP)
@click.argument("task_id")
@json_option
@click.pass_obj
@run_command
def cancel(app: AppContext, task_id: str) -> int:
    """Stop TASK_ID: the current day finishes or rolls back, then it stops.

    The task can be continued later with `batch resume`.
    """
    doc = _service(app).cancel(task_id)
    app.emit(dict(doc, message_type="batch_cancel"),
             lambda: f"{task_id}: {doc['status']} — {doc.get('message', '')}")
    return ExitCode.OK


def _summary(doc: dict[str, Any], detail: bool = False) -> str:
    lines = [f"task {doc['task_id']} ({doc['job']}, {doc['start_date']} to {doc['end_date']}): "
             f"{doc['status']}{' (cancel requested)' if doc.get('cancel_requested') else ''}",
             f"  progress: {doc['current']}/{doc['total']} ({doc['progress_percent']:.1f}%) — "
             f"success {doc['success']}, failed {doc['failed']}, skipped {doc['skipped']}"]
    if doc.get("current_date"):
        lines.append(f"  current day: {doc['current_date']}")
    if doc.get("estimated_completion") and doc["status"] == "running":
        lines.append(f"  estimated completion: {show_time(doc['estimated_completion'])}")
    if doc.get("duration_seconds") is not None:
        lines.append(f"  duration: {doc['duration_seconds']:.1f}s")
    if doc.get("message"):
        lines.append(f"  {doc['message']}")
    if doc.get("errors"):
        lines.append("  recent errors:")
        lines += [f"    {e['date']}: {e['error']}" for e in doc["errors"]]
    if detail and doc.get("days"):
        lines.append("  days:")
        for day, entry in doc["days"].items():
            extra = entry.get("error") or entry.get("reason") or (
                f"{entry['rows']} rows" if entry.get("rows") is not None else "")
            lines.append(f"    {day}  {entry['status']:<9} {extra}".rstrip())
    return "\n".join(lines)


def _reported(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in ("task_id", "job", "status", "total", "success", "failed",
                                    "skipped", "message")}


def _history(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no batch tasks yet"
    header = ["TASK", "JOB", "STATUS", "DAYS", "OK/FAIL/SKIP", "DURATION"]
    body = [[r["task_id"], r["job"], r["status"], str(r["total"]),
             f"{r['success']}/{r['failed']}/{r['skipped']}",
             f"{r['duration_seconds']:.1f}s" if r.get("duration_seconds") is not None else "-"]
            for r in rows]
    return render_table(header, body)
