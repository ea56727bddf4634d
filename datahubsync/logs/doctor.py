"""``doctor`` checks for the logs client: log directory, files, queue, health, endpoint."""

from __future__ import annotations

from datahubsync.core.config import LoadedConfig
from datahubsync.core.doctor import Check, directory_checks
from datahubsync.core.errors import ConfigError, DatahubsyncError


def logs_checks(loaded: LoadedConfig, min_free_bytes: int) -> list[Check]:
    """None unless ``logs`` is configured here (an endpoint or a log directory set)."""
    cfg = loaded.config.logs
    if not loaded.configured("logs"):
        return []
    from datahubsync.logs.service import Listing, open_queue, status

    checks: list[Check] = []
    try:
        files = Listing(cfg.log_dir, cfg.pattern, 0).files()
        checks.append(Check("logs.log_dir", True, f"{cfg.log_dir}: {len(files)} files match "
                            f"{cfg.pattern}" if files else f"{cfg.log_dir}: no file matches "
                            f"{cfg.pattern} yet"))
    except ConfigError as exc:
        checks.append(Check("logs.log_dir", False, str(exc),
                            "point logs.log_dir at the sinkhole's log directory"))
    checks += directory_checks("logs queue", loaded.layout.logs_dir, min_free_bytes)
    try:
        with open_queue(loaded) as queue:
            doc = status(loaded, queue)
        checks.append(Check("logs health", doc["health"] == "healthy",
                            f"{doc['health']}: {doc['pending']} records waiting, "
                            f"{doc['upload_errors']} uploads failed in a row",
                            "see `datahubsync logs status` and the endpoint's logs"))
    except (OSError, DatahubsyncError) as exc:
        checks.append(Check("logs queue", False, str(exc), "check the state directory"))
    checks.append(_endpoint_check(loaded))
    return checks


def _endpoint_check(loaded: LoadedConfig) -> Check:
    """An empty batch to the endpoint (nothing is stored) with the configured key."""
    from datahubsync.core.http import make_session
    from datahubsync.logs.uploader import Uploader

    cfg = loaded.config.logs
    try:
        with make_session() as session:
            uploader = Uploader(cfg.model_copy(update={"max_retries": 0}), session)
            uploader.post(uploader.payload([]), None)
    except DatahubsyncError as exc:
        return Check("logs endpoint", False, str(exc)[:300],
                     "check logs.api_endpoint, logs.api_key and the server's allowed networks")
    return Check("logs endpoint", True, f"{cfg.api_endpoint} accepts the key")
