"""The checks behind ``datahubsync doctor``: each says what is wrong and how to fix it."""

from __future__ import annotations

import os
import tempfile
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


def _writable(label: str, path: Path) -> Check:
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


def run_checks(loaded: LoadedConfig, min_free_bytes: int) -> list[Check]:
    """Config, directories, disk space and hub reachability."""
    cfg = loaded.config
    checks = [Check("config", True, str(loaded.source or "embedded defaults (no file found)"))]
    dirs = [("state_dir", loaded.state_dir)]
    dirs += [(f"dataset {d.name}", d.local_dir.parent) for d in cfg.datasets]
    if cfg.logging.file:
        dirs.append(("log file directory", cfg.logging.file.parent))
    for label, path in dirs:
        checks.append(_writable(label, path))
        free = free_bytes(path)
        checks.append(Check(f"{label} free disk", free >= min_free_bytes,
                            f"{free / 2**30:.1f} GiB free at {path}",
                            "free space or move the directory to a larger filesystem"))
    if cfg.datasets and not cfg.hub.url:
        checks.append(Check("hub", False, "hub.url is not set",
                            "set hub.url in the config or DATAHUBSYNC_HUB__URL"))
    elif cfg.hub.url:
        checks.append(_hub_check(cfg.hub.url, cfg.hub.connect_timeout))
    return checks


def _hub_check(url: str, timeout: float) -> Check:
    import requests

    from datahubsync.core.http import make_session

    try:
        with make_session() as session:
            response = session.get(f"{url}/api/datasets", timeout=(timeout, 30))
        if response.status_code != 200:
            return Check("hub reachable", False, f"{url}/api/datasets answered "
                         f"{response.status_code}", "check hub.url and the hub's logs")
        names = [d.get("name") for d in response.json().get("datasets", [])]
        return Check("hub reachable", True, f"{url} offers {len(names)} datasets")
    except (requests.RequestException, ValueError) as exc:
        return Check("hub reachable", False, f"{url}: {type(exc).__name__}: {exc}"[:300],
                     "check hub.url, DNS, firewall/tunnel, and that the hub is running")
