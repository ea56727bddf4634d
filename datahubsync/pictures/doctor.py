"""``doctor`` checks for the pictures client: task table, picture server, mirror, ledger."""

from __future__ import annotations

import socket
import time
from typing import Any

from datahubsync.core.config import LoadedConfig
from datahubsync.core.doctor import Check, writable_check
from datahubsync.core.errors import DatahubsyncError


def configured(cfg: Any) -> bool:
    return bool(cfg.database_url or cfg.server_url or cfg.legacy_host or cfg.source == "push")


def picture_checks(loaded: LoadedConfig, min_free_bytes: int = 0,
                   now: float | None = None) -> list[Check]:
    """None unless the pictures client (or serve's picture roots) is configured here."""
    cfg = loaded.config.pictures
    sends = [picture_send_check(loaded, now)] if loaded.config.serve.picture_roots else []
    if not configured(cfg):
        return sends
    checks = [writable_check("pictures.local_root", cfg.local_root)]
    if cfg.source == "sql":
        checks.append(_table_check(cfg))
    checks.append(_server_check(cfg))
    checks.append(_ledger_check(loaded, time.time() if now is None else now))
    return checks + sends


def _table_check(cfg: Any) -> Check:
    from datahubsync.pictures.worker import make_source

    try:
        source = make_source(cfg)
        assert source is not None
        source.batch_size = 1
        tasks, _last = source.fetch(None)
    except DatahubsyncError as exc:
        return Check("pictures task table", False, str(exc),
                     "check pictures.database_url, table and column names, and the network")
    return Check("pictures task table", True,
                 f"{cfg.table} readable ({'has rows' if tasks else 'empty'})")


def _server_check(cfg: Any) -> Check:
    if cfg.transport == "legacy-tcp":
        from urllib.parse import urlsplit

        host = cfg.legacy_host or (urlsplit(cfg.server_url).hostname if cfg.server_url else None)
        try:
            socket.create_connection((host or "", cfg.legacy_port), timeout=5).close()
            return Check("picture server (legacy TCP)", True, f"{host}:{cfg.legacy_port}")
        except OSError as exc:
            return Check("picture server (legacy TCP)", False, f"{host}:{cfg.legacy_port}: {exc}",
                         "start the picture server or fix pictures.legacy_host/legacy_port")
    if not cfg.server_url:
        return Check("picture server", cfg.source == "push",
                     "pictures.server_url is not set" + (" (push tasks with URLs only)"
                                                         if cfg.source == "push" else ""),
                     "set pictures.server_url to the serve that has picture_roots")
    from datahubsync.core.http import probe

    status, detail = probe(f"{cfg.server_url}/health")
    ok = status == 200
    return Check("picture server", ok, detail, "start `datahubsync serve` there or fix the URL")


def _ledger_check(loaded: LoadedConfig, now: float) -> Check:
    from datahubsync.pictures.worker import open_ledger, status

    cfg = loaded.config.pictures
    try:
        with open_ledger(loaded) as ledger:
            doc = status(ledger, 1)
            last = ledger.get_meta("last_download")
            waiting = ledger.next_file_due()
    except DatahubsyncError as exc:
        return Check("pictures ledger", False, str(exc), "check pictures.ledger_url")
    files = doc["files"]
    detail = (f"{files['downloaded']} downloaded, {files['pending'] + files['failed']} to do, "
              f"{files['missing']} missing on the server, {files['given_up']} given up")
    if files["given_up"]:
        return Check("pictures ledger", False, detail,
                     "see `datahubsync pictures status`; `pictures retry --failed` tries again")
    if waiting is not None and last is not None and now - float(last) > cfg.stall_timeout:
        return Check("pictures ledger", False, detail + f"; no download for "
                     f"{(now - float(last)) / 3600:.1f} h while files wait",
                     "is `datahubsync pictures run` running? see its journal")
    return Check("pictures ledger", True, detail)


def picture_send_check(loaded: LoadedConfig, now: float | None = None) -> Check:
    """Has ``serve`` sent a picture within ``serve.picture_stale_after``?

    The old picture server restarted itself after 24 h without a send; a long
    silence usually means clients stopped asking (their poller or the task
    table is stuck), not that the server is broken, so it is reported here.
    """
    import datetime as dt
    import time

    from datahubsync.pictures.lastsend import last_send_path, read_last_send

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


