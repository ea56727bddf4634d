"""What the pictures feature writes, per systemd unit (see ``core.writepaths``)."""

from __future__ import annotations

from collections.abc import Iterator

from datahubsync.core.config import LoadedConfig
from datahubsync.core.writepaths import WritePath, sqlite_dir


def picture_write_paths(loaded: LoadedConfig, unit: str) -> Iterator[WritePath]:
    cfg = loaded.config.pictures
    ledger = sqlite_dir(cfg.ledger_url)
    if unit == "pictures":
        yield WritePath(cfg.local_root, "pictures.local_root")
        if ledger is not None:
            yield WritePath(ledger, "pictures.ledger_url")
    if unit == "serve" and cfg.source == "push" and ledger is not None:
        yield WritePath(ledger, "pictures.ledger_url (push)")
