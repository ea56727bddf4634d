"""The shared command runner: error classes map to exit codes, one line each."""

from __future__ import annotations

import click
from click.testing import CliRunner

from datahubsync.cli import cli
from datahubsync.cli.runner import AppContext, run_command
from datahubsync.core.errors import LockedError
from tests.helpers import client_config, run_cli, write_yaml


def _group_with(exc: BaseException, during_ctrl_c: bool = False) -> click.Group:
    @click.group()
    @click.option("--log-level")
    @click.pass_context
    def root(ctx: click.Context, log_level: str | None) -> None:
        ctx.obj = AppContext(log_level=log_level.upper() if log_level else None)

    @root.command()
    @run_command
    def boom() -> int:
        if not during_ctrl_c:
            raise exc
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise exc  # noqa: B904 - as a failed cleanup does: the interrupt is its context

    return root


def test_unexpected_error_exits_70_with_one_line() -> None:
    result = CliRunner().invoke(_group_with(RuntimeError("kaput")), ["boom"])
    assert result.exit_code == 70
    assert "internal error: RuntimeError: kaput" in result.output
    assert "Traceback" not in result.output


def test_known_error_uses_its_code() -> None:
    result = CliRunner().invoke(_group_with(LockedError("another run holds x")), ["boom"])
    assert result.exit_code == 75 and "another run holds x" in result.output


def test_keyboard_interrupt_exits_130() -> None:
    assert CliRunner().invoke(_group_with(KeyboardInterrupt()), ["boom"]).exit_code == 130


def test_an_error_raised_while_a_ctrl_c_unwinds_is_the_interrupt() -> None:
    """SQLAlchemy's rollback after a Ctrl-C between BEGIN and COMMIT fails with "cannot
    rollback - no transaction is active": that is the interrupt (130), not a bug (70)."""
    import sqlite3

    failed = sqlite3.OperationalError("cannot rollback - no transaction is active")
    result = CliRunner().invoke(_group_with(failed, during_ctrl_c=True), ["boom"])
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and "internal error" not in result.output
    assert CliRunner().invoke(_group_with(sqlite3.OperationalError("x")), ["boom"]).exit_code == 70


def test_unwritable_state_dir_is_a_clear_error(tmp_path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    cfg = client_config(tmp_path, "http://127.0.0.1:9", ["alpha"],
                        state_dir=str(blocker / "state"))
    result = run_cli(["datasets", "sync"], config=cfg, expect=2)  # a config error, named
    assert "state_dir: " in result.err and "not-a-dir is not a directory" in result.err
    assert "internal error" not in result.err and "Traceback" not in result.err


def test_serve_port_in_use_is_usage_error(tmp_path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        cfg = write_yaml(tmp_path / "hub.yaml", {
            "state_dir": str(tmp_path / "s"),
            "serve": {"host": "127.0.0.1", "port": port, "data_root": str(tmp_path)}})
        result = run_cli(["serve"], config=cfg, expect=2)
    assert f"cannot listen on 127.0.0.1:{port}" in result.err


def test_every_group_is_registered() -> None:
    assert {"datasets", "serve", "doctor", "version"} <= set(cli.commands)
