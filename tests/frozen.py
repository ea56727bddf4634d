"""The frozen binary for the tests: built by packaging/build.sh when missing or stale."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

BINARY = ROOT / "dist" / "datahubsync"
INPUTS = ("datahubsync", "packaging/datahubsync.spec", "constraints.txt", "setup.cfg")


def newest_input() -> float:
    newest = 0.0
    for name in INPUTS:
        path = ROOT / name
        files = path.rglob("*.py") if path.is_dir() else [path]
        newest = max([newest, *(f.stat().st_mtime for f in files)])
    return newest


def frozen_binary() -> Path:
    """dist/datahubsync, rebuilt when a source is newer (about 45 s on 2 cores)."""
    if not BINARY.exists() or BINARY.stat().st_mtime < newest_input():
        env = {**os.environ, "PYTHON": sys.executable}
        proc = subprocess.run([str(ROOT / "packaging" / "build.sh")], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise AssertionError(f"packaging/build.sh failed:\n{proc.stdout}\n{proc.stderr}")
    return BINARY
