"""``doctor`` checks for datasets: the client's directories and hub, the hub's data_root."""

from __future__ import annotations

from datahubsync.core.config import LoadedConfig
from datahubsync.core.doctor import Check, directory_checks


def dataset_checks(loaded: LoadedConfig, min_free_bytes: int) -> list[Check]:
    """Each dataset's directory, the hub (reachable, clock); serve's data_root when set."""
    cfg = loaded.config
    checks: list[Check] = []
    for d in cfg.datasets:
        checks += directory_checks(f"dataset {d.name}", d.local_dir.parent, min_free_bytes)
    if cfg.datasets and not cfg.hub.url:
        checks.append(Check("hub", False, "hub.url is not set",
                            "set hub.url in the config or DATAHUBSYNC_HUB__URL"))
    elif cfg.hub.url:
        hub = _hub_check(loaded)
        checks.append(hub)
        if hub.ok:
            checks.append(clock_check(cfg.hub.url, cfg.hub.connect_timeout, loaded))
    if loaded.configured("serve"):
        root = cfg.serve.data_root
        checks.append(Check("serve.data_root", root.is_dir(),
                            f"{root} {'holds' if root.is_dir() else 'does not exist: no'} "
                            "datasets" + (f" ({_count(root)})" if root.is_dir() else ""),
                            "create it or point serve.data_root at the datasets' parent "
                            "directory"))
    return checks


def _count(root: object) -> str:
    import os

    try:
        names = [e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return "unreadable"
    return f"{len(names)} found"


def _hub_check(loaded: LoadedConfig) -> Check:
    import requests

    from datahubsync.core.errors import DatahubsyncError
    from datahubsync.datasets.hubaccess import hub_access

    url, timeout = loaded.config.hub.url, loaded.config.hub.connect_timeout
    try:
        access = hub_access(loaded)
        with access.session() as session:
            response = session.get(access.url("api/datasets"), timeout=(timeout, 30))
        if response.status_code != 200:
            return Check("hub reachable", False, f"{url}/api/datasets answered "
                         f"{response.status_code}", "check hub.url and the hub's logs")
        names = [d.get("name") for d in response.json().get("datasets", [])]
        return Check("hub reachable", True, f"{url} offers {len(names)} datasets")
    except (requests.RequestException, ValueError) as exc:
        return Check("hub reachable", False, f"{url}: {type(exc).__name__}: {exc}"[:300],
                     "check hub.url, DNS, firewall/tunnel, and that the hub is running")
    except DatahubsyncError as exc:  # an s3:// hub refusing the credentials, say
        return Check("hub reachable", False, str(exc)[:400],
                     "check hub.url and the s3 section (or the AWS_* variables)")


def clock_check(url: str, timeout: float, loaded: LoadedConfig | None = None,
                max_skew: float = 60.0) -> Check:
    """This host's clock against the hub's ``Date`` header (timestamps are compared)."""
    import email.utils
    import time

    import requests

    from datahubsync.core.errors import DatahubsyncError
    from datahubsync.core.http import make_session

    try:
        if loaded is not None:
            from datahubsync.datasets.hubaccess import hub_access

            access = hub_access(loaded)
            session, target = access.session(), access.url("health")
        else:
            session, target = make_session(), f"{url}/health"
        with session:
            before = time.time()
            response = session.get(target, timeout=(timeout, 30))
            after = time.time()
        date = response.headers.get("Date")
        if not date:
            return Check("clock", True, f"{url} sends no Date header; skew not checked")
        remote = email.utils.parsedate_to_datetime(date).timestamp()
    except (requests.RequestException, ValueError, TypeError, DatahubsyncError) as exc:
        return Check("clock", True, f"skew not checked: {type(exc).__name__}")
    skew = (before + after) / 2 - remote
    ok = abs(skew) <= max_skew + 1  # the Date header has whole seconds
    return Check("clock", ok, f"{skew:+.0f}s against the hub",
                 "" if ok else "run NTP (systemd-timesyncd or chrony) on this host")
