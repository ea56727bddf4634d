"""``logs test``: the config, the extraction on a sample line, the endpoint and its key,
and the ``ip_regex`` against the start of the newest log file."""

from __future__ import annotations

from typing import Any

from datahubsync.core.config import LoadedConfig
from datahubsync.core.errors import ConfigError
from datahubsync.logs.parser import find_ips, token_pattern
from datahubsync.logs.regex_hint import judge, newest_sample
from datahubsync.logs.service import Listing


def self_check(loaded: LoadedConfig, uploader: Any, sample: str) -> dict[str, Any]:
    """Everything ``logs test`` reports; the endpoint is sent an empty batch (nothing is
    stored), and a refused key or source raises (exit 2)."""
    cfg = loaded.config.logs
    found = find_ips(sample.encode(), token_pattern(cfg.ip_regex))
    try:
        files = Listing(cfg.log_dir, cfg.pattern, 0).files()
    except ConfigError:  # no log_dir yet: the endpoint is still worth checking
        files = []
    log_file, data = newest_sample(files)
    check = judge(data, cfg.ip_regex) if log_file is not None else None
    answer = uploader.post(uploader.payload([]), None)
    return {"sample_ips": found, "endpoint": "ok", "answer": answer,
            "source_ip": uploader.source_ip, "log_file": str(log_file) if log_file else None,
            "ip_regex_check": check}
