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


def run_checks(loaded: LoadedConfig, min_free_bytes: int) -> list[Check]:
    """Config, directories, disk space and hub reachability."""
    cfg = loaded.config
    checks = [Check("config", True, str(loaded.source or "embedded defaults (no file found)"))]
    dirs = [("state_dir", loaded.state_dir)]
    dirs += [(f"dataset {d.name}", d.local_dir.parent) for d in cfg.datasets]
    if cfg.logging.file:
        dirs.append(("log file directory", cfg.logging.file.parent))
    for label, path in dirs:
        checks.append(writable_check(label, path))
        free = free_bytes(path)
        checks.append(Check(f"{label} free disk", free >= min_free_bytes,
                            f"{free / 2**30:.1f} GiB free at {path}",
                            "free space or move the directory to a larger filesystem"))
    if cfg.datasets and not cfg.hub.url:
        checks.append(Check("hub", False, "hub.url is not set",
                            "set hub.url in the config or DATAHUBSYNC_HUB__URL"))
    elif cfg.hub.url:
        hub = _hub_check(cfg.hub.url, cfg.hub.connect_timeout)
        checks.append(hub)
        if hub.ok:
            checks.append(clock_check(cfg.hub.url, cfg.hub.connect_timeout))
    if cfg.serve.picture_roots:
        checks.append(picture_send_check(loaded))
    return checks


def picture_send_check(loaded: LoadedConfig, now: float | None = None) -> Check:
    """Has ``serve`` sent a picture within ``serve.picture_stale_after``?

    The seed's server restarted itself after 24 h without a send; a long
    silence usually means clients stopped asking (their poller or the task
    table is stuck), not that the server is broken, so it is reported here.
    """
    import datetime as dt
    import time

    from datahubsync.core.lastsend import last_send_path, read_last_send

    path = last_send_path(loaded.state_dir)
    last = read_last_send(path)
    if last is None:
        return Check("picture sends", True, f"no picture sent yet ({path} absent)")
    age = (time.time() if now is None else now) - last
    when = dt.datetime.fromtimestamp(last).astimezone().isoformat(timespec="seconds")
    limit = loaded.config.serve.picture_stale_after
    if age > limit:
        return Check("picture sends", False,
                     f"last picture sent {age / 3600:.1f} h ago ({when}), "
                     f"more than serve.picture_stale_after ({limit / 3600:.1f} h)",
                     "check that picture clients run (datahubsync pictures status on them), "
                     "that the task table gets new rows, and serve's log")
    return Check("picture sends", True, f"last picture sent {age / 60:.0f} min ago ({when})")


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


def clock_check(url: str, timeout: float, max_skew: float = 60.0) -> Check:
    """This host's clock against the hub's ``Date`` header (timestamps are compared)."""
    import email.utils
    import time

    import requests

    from datahubsync.core.http import make_session

    try:
        with make_session() as session:
            before = time.time()
            response = session.get(f"{url}/health", timeout=(timeout, 30))
            after = time.time()
        date = response.headers.get("Date")
        if not date:
            return Check("clock", True, f"{url} sends no Date header; skew not checked")
        remote = email.utils.parsedate_to_datetime(date).timestamp()
    except (requests.RequestException, ValueError, TypeError) as exc:
        return Check("clock", True, f"skew not checked: {type(exc).__name__}")
    skew = (before + after) / 2 - remote
    ok = abs(skew) <= max_skew + 1  # the Date header has whole seconds
    return Check("clock", ok, f"{skew:+.0f}s against the hub",
                 "" if ok else "run NTP (systemd-timesyncd or chrony) on this host")
