"""Crash tests at named points: run a command with DATAHUBSYNC_CRASH_AT, see it die there.

``killed_at(...)`` runs the CLI with the point armed and asserts the process
died of SIGKILL (so the point was reached: a test can never pass by killing
too late or too early). ``declared_points()`` lists every ``CrashPoint`` in
the package, read from the source, for the test that every point is killed at.
"""

from __future__ import annotations

import ast
import signal
from collections.abc import Sequence
from pathlib import Path

from datahubsync.core.crashpoint import ENV
from tests.helpers import ROOT, Result, run_cli

KILLED = -signal.SIGKILL


def crash_env(point: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {ENV: point, **(extra or {})}


def killed_at(point: str, args: Sequence[str], *, config: Path,
              env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """Run ``datahubsync ARGS`` armed to die at ``point``; it must die there."""
    result = run_cli(args, config=config, expect=None, env=crash_env(point, env),
                     timeout=timeout)
    assert result.code == KILLED, (
        f"{point}: exit {result.code}, not killed there (point never reached?)\n"
        f"stdout:\n{result.out}\nstderr:\n{result.err}")
    return result


def point_name(spec: str) -> str:
    """``install.staged:3`` -> ``install.staged``."""
    return spec.partition(":")[0]


def declared_points(package: Path = ROOT / "datahubsync") -> dict[str, str]:
    """Every ``CrashPoint("name", ...)`` in the package's source: name -> file."""
    found: dict[str, str] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "CrashPoint" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                name = str(node.args[0].value)
                assert name not in found, f"crash point {name} declared twice"
                found[name] = str(path.relative_to(ROOT))
    return found
