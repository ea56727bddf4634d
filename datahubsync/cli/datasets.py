"""``datahubsync datasets ...``: sync, list, status, rollback, publish."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from datahubsync.cli.runner import AppContext, json_option, render_table, run_command
from datahubsync.core.errors import EXIT_STATUS_HELP, ExitCode
from datahubsync.core.timeutil import show_time, show_value


@click.group()
def datasets() -> None:
    """Keep local copies of the hub's datasets up to date."""


@datasets.command(epilog=EXIT_STATUS_HELP)
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Download and install even if up to date")
@click.option("--dry-run", is_flag=True, help="Only say what would be downloaded")
@click.option("--max-time", type=click.FloatRange(min=1), metavar="SECONDS",
              help="Give up (and fail) when the whole sync takes longer than this")
@json_option
@click.pass_obj
@run_command(report="datasets sync")
def sync(app: AppContext, names: tuple[str, ...], force: bool, dry_run: bool,
         max_time: float | None) -> int:
    """Download and install datasets whose hub version is newer than ours.

    NAMES limits the run to those configured datasets (default: all). Each
    dataset is independent: one failing does not stop the others. Downloads
    resume where they stopped; installs are atomic (the previous version is
    kept for `datasets rollback`).
    """
    from datahubsync.datasets.client import SyncOptions
    from datahubsync.datasets.client import sync as run_sync

    loaded = app.config()
    results = run_sync(loaded, SyncOptions(names=names, force=force, dry_run=dry_run,
                                           max_time=max_time,
                                           progress=app.printer.progress()))
    app.report("datasets", [_reported(r) for r in results],
               bytes_moved=sum(r.bytes_downloaded for r in results),
               items_failed=sum(r.failed for r in results))
    app.emit({"message_type": "summary", "datasets": [asdict(r) for r in results]},
             lambda: "\n".join(_sync_line(r) for r in results))
    return ExitCode.PARTIAL if any(r.failed for r in results) else ExitCode.OK


def _reported(r: Any) -> dict[str, Any]:
    """What the hub's fleet view needs of one dataset's sync."""
    installed = r.remote_last_updated if r.status == "installed" else r.local_last_updated
    return {"name": r.name, "status": r.status, "installed": installed,
            "hub": r.remote_last_updated, "method": r.method, "bytes": r.bytes_downloaded,
            "seconds": r.seconds, "message": r.message[:300]}


def _sync_line(r: Any) -> str:
    detail = {
        "installed": f"installed {show_time(r.remote_last_updated)} ({r.method}: "
                     f"{r.bytes_downloaded} bytes downloaded"
                     f"{', resumed' if r.resumed_from else ''}, "
                     f"{r.seconds:.1f}s{_delta_counts(r)})",
        "up_to_date": f"up to date ({show_time(r.local_last_updated)})",
        "would_install": f"would install {show_time(r.remote_last_updated)} "
                         f"({show_value(r.package_size)} bytes)",
        "skipped": f"skipped: {r.message}",
    }.get(r.status, f"FAILED: {r.message}")
    return f"{r.name}: {detail}"


def _delta_counts(r: Any) -> str:
    if r.method != "delta":
        return f"; delta not used: {r.delta_fallback}" if r.delta_fallback else ""
    return (f"; {r.files_added} added, {r.files_changed} changed, {r.files_appended} appended, "
            f"{r.files_deleted} deleted")


@datasets.command("list", epilog=EXIT_STATUS_HELP)
@json_option
@click.pass_obj
@run_command
def list_(app: AppContext) -> int:
    """Show what the hub offers next to what is installed here."""
    from datahubsync.datasets.views import list_view

    rows = list_view(app.config())
    app.emit({"message_type": "list", "datasets": rows}, lambda: render_table(
        ["NAME", "HUB VERSION", "SIZE", "LOCAL VERSION", "STATE"],
        [[r["name"], show_time(r["remote_last_updated"], "-"), show_value(r["package_size"]),
          show_time(r["local_last_updated"], "-"), r["state"]] for r in rows]))
    return 0


@datasets.command(epilog=EXIT_STATUS_HELP)
@json_option
@click.pass_obj
@run_command
def status(app: AppContext) -> int:
    """Show the local state of each configured dataset (no network)."""
    from datahubsync.datasets.views import status_view

    loaded = app.config()
    rows = status_view(loaded)
    app.emit({"message_type": "status", "state_dir": str(loaded.state_dir), "datasets": rows},
             lambda: render_table(
                 ["NAME", "VERSION", "PRESENT", "PREVIOUS", "PARTIAL", "LOCAL DIR"],
                 [[r["name"], show_time(r["last_updated"], "-"),
                   "yes" if r["present"] else "NO", str(len(r["previous"])),
                   str(r["partial_download_bytes"]), r["local_dir"]] for r in rows]))
    return 0


@datasets.command(epilog=EXIT_STATUS_HELP)
@click.argument("name")
@json_option
@click.pass_obj
@run_command
def rollback(app: AppContext, name: str) -> int:
    """Put back the previous version of NAME (kept by the last install).

    The version rolled back from is not reinstalled by `datasets sync` until
    the hub offers a newer one (or `--force`).
    """
    from datahubsync.core.locking import hold_lock
    from datahubsync.datasets.client import select
    from datahubsync.datasets.install import rollback as do_rollback
    from datahubsync.datasets.state import ClientState

    loaded = app.config()
    ds = select(loaded, [name])[0]
    state = ClientState(loaded.state_dir)
    with hold_lock(state.state_dir / "datasets.lock", loaded.config.sync.lock_wait):
        record = do_rollback(state, name, ds.local_dir, ds.mode)
    current = record.current.last_updated if record.current else None
    app.emit({"message_type": "rollback", "name": name, "last_updated": current,
              "skip_last_updated": record.skip_last_updated},
             lambda: f"{name}: rolled back to {show_time(current)}")
    return 0


@datasets.command(epilog=EXIT_STATUS_HELP)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write the static tree into (with --to: the local copy; "
                   "default under the state directory)")
@click.option("--to", "to", metavar="s3://BUCKET/PREFIX",
              help="Also upload the tree to S3-compatible storage (the s3 config section "
                   "or the AWS_* variables say where and with which credentials)")
@click.option("--data-root", type=click.Path(file_okay=False, path_type=Path),
              help="Directory whose sub-directories are the datasets (serve.data_root)")
@click.option("--force", is_flag=True, help="Build a new package for every changed dataset")
@json_option
@click.pass_obj
@run_command
def publish(app: AppContext, out: Path | None, to: str | None, data_root: Path | None,
            force: bool) -> int:
    """Write a static tree (health, api/datasets, package/NAME.zip) for nginx or a CDN.

    `datasets sync` works against such a tree unchanged: point hub.url at
    wherever it is served, or at the s3:// URL given to --to. With --to the
    objects go up first and the catalog last, so readers see the previous
    version until the new one is complete; unchanged objects are not sent again.
    """
    from datahubsync.core.errors import UsageError
    from datahubsync.core.locking import hold_lock

    loaded = app.config()
    if data_root is not None:
        loaded.config.serve.data_root = data_root.resolve()
    if out is None and to is None:
        raise UsageError("give --out DIR (a static tree) and/or --to s3://BUCKET/PREFIX")
    if to is None:
        from datahubsync.datasets.publish import publish as do_publish

        assert out is not None
        with hold_lock(out / ".publish.lock"):
            result = do_publish(loaded, out, force)
        upload = None
    else:
        from datahubsync.datasets.s3publish import publish_to_s3, staging_dir

        if not to.startswith("s3://"):
            raise UsageError(f"--to {to}: expected s3://BUCKET/PREFIX")
        out = out if out is not None else staging_dir(loaded, to)
        with hold_lock(out / ".publish.lock"):
            result, upload = publish_to_s3(loaded, to, out, force)
    document: dict[str, Any] = {"message_type": "publish", "out": str(result.out),
                                "datasets": result.datasets, "decisions": result.built}
    if upload is not None:
        document["upload"] = asdict(upload)

    def text() -> str:
        lines = [f"{d['name']}: {show_time(d['last_updated'])} ({d['package_size']} bytes)"
                 f" — {result.built.get(d['name'], '')}" for d in result.datasets]
        if upload is not None:
            lines.append(f"{upload.to}: {len(upload.uploaded)} uploaded "
                         f"({upload.bytes_uploaded} bytes), {len(upload.copied)} copied, "
                         f"{len(upload.unchanged)} unchanged, {len(upload.deleted)} removed")
        return "\n".join(lines)

    app.emit(document, text)
    return 0
