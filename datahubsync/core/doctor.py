"""The checks behind ``datahubsync doctor``: each says what is wrong and how to fix it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from datahubsync.core.config import LoadedConfig
from datahubsync.core.fsutil import free_bytes


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def writable_check(label: str, path: Path) -> Check:
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        if probe == path:
            with tempfile.TemporaryFile(dir=path):
                pass
        elif not os.access(probe, os.W_OK):
            raise PermissionError(f"{probe} is not writable")
        return Check(f"{label} writable", True, str(path))
    except OSError as exc:
        return Check(f"{label} writable", False, f"{path}: {exc}",
                     f"create {path} and give the service user write access (chown/chmod)")


def directory_checks(label: str, path: Path, min_free_bytes: int) -> list[Check]:
    """``path`` writable, and with at least ``min_free_bytes`` free."""
    free = free_bytes(path)
    return [writable_check(label, path),
            Check(f"{label} free disk", free >= min_free_bytes,
                  f"{free / 2**30:.1f} GiB free at {path}",
                  "free space or move the directory to a larger filesystem")]


# What each feature contributes: a function of (loaded config, min free bytes) that
# returns its checks, empty when the feature is not configured on this host.
CheckProvider = Callable[[LoadedConfig, int], list[Check]]


def run_checks(loaded: LoadedConfig, min_free_bytes: int,
               providers: Sequence[CheckProvider] = ()) -> list[Check]:
    """The config and the directories every command uses, then each provider's checks."""
    cfg = loaded.config
    checks = [Check("config", True, str(loaded.source or "embedded defaults (no file found)"))]
    checks += directory_checks("state_dir", loaded.state_dir, min_free_bytes)
    if cfg.logging.file:
        checks += directory_checks("log file directory", cfg.logging.file.parent,
                                   min_free_bytes)
    for provider in providers:
        checks += provider(loaded, min_free_bytes)
    return checks


