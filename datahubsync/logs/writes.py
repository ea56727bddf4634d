"""What the logs feature writes, per systemd unit (see ``core.writepaths``).

``logs.log_dir`` is read only; the queue lives in the state directory. The
ingest store of ``serve`` is SQLite under the state directory unless a
PostgreSQL ``store_url`` is set.
"""

from __future__ import annotations

from collections.abc import Iterator

from datahubsync.core.config import LoadedConfig
from datahubsync.core.writepaths import WritePath


def logs_write_paths(loaded: LoadedConfig, unit: str) -> Iterator[WritePath]:
    return iter(())
