"""What the datasets feature writes, per systemd unit (see ``core.writepaths``)."""

from __future__ import annotations

from collections.abc import Iterator

from datahubsync.core.config import LoadedConfig
from datahubsync.core.writepaths import WritePath


def dataset_write_paths(loaded: LoadedConfig, unit: str) -> Iterator[WritePath]:
    cfg = loaded.config
    if unit == "sync":
        for ds in cfg.datasets:  # the new tree and the kept versions are siblings of local_dir
            yield WritePath(ds.local_dir.parent, f"datasets: {ds.name} (beside local_dir)")
    if unit == "serve" and cfg.serve.cache_dir is not None:
        yield WritePath(cfg.serve.cache_dir, "serve.cache_dir")
