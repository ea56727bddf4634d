"""The one place where commands get their config, logging, output and exit codes.

Commands declare what they need with ``@run_command``; errors we expect are
shown as one line (JSON on stderr with ``--json``) and mapped to the codes in
``core.errors``. Anything unexpected exits 70 with one line; the traceback
is shown only at ``--log-level debug``.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

from datahubsync.core.errors import DatahubsyncError, ExitCode
from datahubsync.core.logsetup import setup_logging
from datahubsync.core.printer import Printer, make_printer

if TYPE_CHECKING:  # pydantic is imported only by commands that load the config
    from pathlib import Path

    from datahubsync.core.config import LoadedConfig
    from datahubsync.core.layout import StateLayout
    from datahubsync.core.report import RunRecord

log = logging.getLogger("datahubsync")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppContext:
    """Root options, passed to every command through ``ctx.obj``."""

    config_path: str | None = None
    log_level: str | None = None
    json: bool = False
    metrics_file: str | None = None
    json_lines: bool = False  # --json-lines: one object per line, progress first
    run: RunRecord | None = None  # the report of this run, when the command makes one
    _loaded: LoadedConfig | None = field(default=None, repr=False)

    def report(self, section: str, details: Any, *, bytes_moved: int = 0,
               items_failed: int = 0) -> None:
        """Add what the command did to the run's report (see ``core.report``)."""
        if self.run is not None:
            self.run.details[section] = details
            self.run.bytes += bytes_moved
            self.run.items_failed += items_failed

    def config(self) -> LoadedConfig:
        """Load and validate the config once; set up logging from it."""
        if self._loaded is None:
            from datahubsync.schema import load_config

            self._loaded = load_config(self.config_path)
            cfg = self._loaded.config.logging
            setup_logging(self.log_level or cfg.level, cfg.file)
        return self._loaded

    @property
    def printer(self) -> Printer:
        """Text, ``--json`` or ``--json-lines`` (``core.printer``), on today's streams."""
        return make_printer(self.json, self.json_lines, sys.stdout, sys.stderr)

    def emit(self, document: Any, text: Callable[[], str]) -> None:
        """Print a result: the JSON document with ``--json``, else the text."""
        self.printer.result(document, text)


def json_option(func: F) -> F:
    """``--json`` and ``--json-lines`` on a command (also accepted before its name)."""

    def callback(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        app = ctx.find_object(AppContext)
        if value and app is not None:
            app.json = True
            app.json_lines = app.json_lines or param.name == "json_lines_flag"
        return value

    func = click.option("--json-lines", "json_lines_flag", is_flag=True, expose_value=False,
                        callback=callback,
                        help="Print JSON, one object per line: progress of long work "
                             '("message_type": "status"), then the result')(func)
    return click.option("--json", "json_flag", is_flag=True, expose_value=False,
                        callback=callback, help="Print results as JSON")(func)


def _set_root(name: str) -> Any:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value is not None:
            app = ctx.find_object(AppContext)
            if app is not None:
                setattr(app, name, value.upper() if name == "log_level" else value)
        return value
    return callback


def accept_root_options(group: click.Group) -> None:
    """Let every command take ``--config`` and ``--log-level`` after its name too
    (``datahubsync datasets sync --config x.yaml``), as users type them."""
    for command in group.commands.values():
        if isinstance(command, click.Group):
            accept_root_options(command)
            continue
        names = {o for p in command.params for o in getattr(p, "opts", [])}
        if "--config" not in names:
            command.params.append(click.Option(
                ["--config", "config_path"], type=click.Path(dir_okay=False),
                expose_value=False, callback=_set_root("config_path"),
                help="Config file (as before the command name)"))
        if "--metrics-file" not in names:
            command.params.append(click.Option(
                ["--metrics-file"], type=click.Path(dir_okay=False), expose_value=False,
                callback=_set_root("metrics_file"),
                help="Write node_exporter textfile metrics of this run here"))
        if "--log-level" not in names:
            command.params.append(click.Option(
                ["--log-level"], type=click.Choice(["debug", "info", "warning", "error"],
                                                   case_sensitive=False),
                expose_value=False, callback=_set_root("log_level"),
                help="Override logging.level (as before the command name)"))


def run_command(func: F | None = None, *, report: str | None = None,
                lock: Callable[[StateLayout], Path] | None = None) -> Any:
    """Wrap a command: map our errors to exit codes, one line each.

    ``@run_command(report="datasets sync")``: when the run ends (however it ends,
    once the config is loaded) it is reported to the hub and written to the
    metrics file (``core.report``); the command adds its details with
    ``app.report(...)``. ``lock=lambda layout: layout.logs_lock``: the command runs
    holding that lock (exit 75 naming the holder when another run has it).
    """
    if func is None:
        return lambda f: run_command(f, report=report, lock=lock)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        app = click.get_current_context().find_object(AppContext) or AppContext()
        setup_logging(app.log_level or "INFO")
        if report is not None:
            from datahubsync.core.report import RunRecord

            app.run = RunRecord(report)
        code: int = 0
        try:
            if lock is None:
                code = int(func(*args, **kwargs) or 0)
            else:
                from datahubsync.core.locking import hold_lock

                with hold_lock(lock(app.config().layout)):
                    code = int(func(*args, **kwargs) or 0)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            code = _fail(app, "interrupted", ExitCode.INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            code = _fail(app, *_outcome(exc))
        finally:
            _finish(app, code)
        sys.exit(code)

    return wrapper


def _outcome(exc: Exception) -> tuple[str, int]:
    """The one line and the exit code for an error that ended a command."""
    if _while_interrupted(exc):
        log.debug("error while interrupted", exc_info=True)
        return "interrupted", ExitCode.INTERRUPTED
    if isinstance(exc, DatahubsyncError):
        return str(exc), exc.exit_code
    if isinstance(exc, OSError):  # the environment, not a bug: say which file and why
        log.debug("OS error", exc_info=True)
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}", ExitCode.PARTIAL
    log.debug("unexpected error", exc_info=True)
    return (f"internal error: {type(exc).__name__}: {exc} "
            "(run with --log-level debug for details)", ExitCode.SOFTWARE)


def _while_interrupted(exc: BaseException) -> bool:
    """Was ``exc`` raised while a Ctrl-C unwound the stack? A cleanup that fails because
    the interrupt landed half way (SQLite's "cannot rollback - no transaction is
    active" when it hit between BEGIN and COMMIT) is the interrupt, not a bug: exit 130."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, KeyboardInterrupt):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    return False


def _finish(app: AppContext, code: int) -> None:
    """Report the run (never failing it): only when the config could be loaded."""
    if app.run is None or app._loaded is None:  # noqa: SLF001 - our own context
        return
    from pathlib import Path

    from datahubsync.core.report import finish_run

    app.run.exit_code = code
    try:
        finish_run(app._loaded, app.run,  # noqa: SLF001
                   Path(app.metrics_file) if app.metrics_file else None)
    except Exception:  # noqa: BLE001 - reporting never changes the command's outcome
        log.warning("the run could not be reported", exc_info=log.isEnabledFor(10))


def _fail(app: AppContext, message: str, code: ExitCode) -> int:
    """Print the error line (JSON on stderr with ``--json``); returns the exit code."""
    if app.run is not None:
        app.run.message = message
    app.printer.error(message, code)
    return int(code)


def render_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell (the text form of list/status commands)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False))
                     .rstrip() for row in [header, *rows])
