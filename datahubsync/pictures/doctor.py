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


def picture_checks(loaded: LoadedConfig, now: float | None = None) -> list[Check]:
    """None unless the pictures client is configured on this host."""
    cfg = loaded.config.pictures
    if not configured(cfg):
        return []
    checks = [writable_check("pictures.local_root", cfg.local_root)]
    if cfg.source == "sql":
        checks.append(_table_check(cfg))
    checks.append(_server_check(cfg))
    checks.append(_ledger_check(loaded, time.time() if now is None else now))
    return checks


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
    import requests

    try:
        response = requests.get(f"{cfg.server_url}/health", timeout=5)
        ok = response.status_code == 200
        detail = f"{cfg.server_url}: HTTP {response.status_code}"
    except requests.RequestException as exc:
        from datahubsync.core.http import describe_error

        ok, detail = False, f"{cfg.server_url}: {describe_error(exc)}"
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
