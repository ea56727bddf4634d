"""The datasets feature's config: ``datasets:`` (what a client keeps), ``sync:`` (how it
downloads and installs) and the hub's packaging keys under ``serve:``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from datahubsync.core.config import PART, Section, inside


class DatasetConfig(Section):
    """One dataset this client keeps a copy of."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    local_dir: Path
    mode: Literal["swap", "overlay"] = "swap"
    keep_previous: int = Field(1, ge=0)


class SyncConfig(Section):
    """How the client downloads and installs."""

    # The 08:15 sync must end before trading (09:15): on by default, cron and timer alike.
    max_time: float | None = Field(2700, gt=0)  # seconds for the whole sync; null = no limit
    deadline: str | None = Field(None, pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")  # HH:MM
    min_rate: int = Field(1024, ge=0)  # bytes/s a download must keep up ... (0 = off)
    min_rate_window: float = Field(60, gt=0)  # ... over this many seconds, or it fails
    max_total_bytes: int = Field(64 * 1024**3, gt=0)
    max_ratio: float = Field(200.0, gt=1)
    fsync: bool = True
    # threads that inflate and write a package's files; None: one per CPU, at most 4
    extract_threads: int | None = Field(None, ge=1, le=64)
    lock_wait: float = Field(0, ge=0)
    delta: bool = True  # use the hub's deltas when it offers one from the installed version
    delta_max_share: float = Field(0.5, gt=0, le=1)  # else download the full package
    on_local_change: Literal["repair", "refuse"] = "repair"  # hand-edited local files


class DatasetsServeKeys(Section):
    """``serve:`` keys of the hub's packages (data_root, the package cache, when to build)."""

    model_config = PART

    data_root: Path = Path("data")
    datasets: list[str] | None = None
    dataset_links_outside: bool = False  # package a dataset dir symlinked out of data_root
    cache_dir: Path | None = None
    check_interval: float = Field(600, gt=0)
    debounce: float = Field(60, ge=0)
    newer_ratio: float = Field(0.85, ge=0, le=1)
    fresh_window: float = Field(86400, ge=0)
    keep_packages: int = Field(2, ge=0)
    keep_deltas: int = Field(2, ge=0)  # deltas from this many previous versions (0 = none)
    max_delta_share: float = Field(0.5, gt=0, le=1)  # drop a delta larger than this share
    compress_level: int = Field(6, ge=0, le=9)
    compress_codec: Literal["zlib", "zlib-ng", "isal"] = "zlib-ng"  # same ZIP, faster deflate
    compress_threads: int | None = Field(None, ge=1)
    catalog_poll: float = Field(1.0, gt=0)


def datasets_path_problem(config: Any, state: Path) -> tuple[str, str] | None:
    """Two datasets sharing a name or a directory, a dataset installed over ``/`` or
    around the state directory (a swap would move the state away): (key, why)."""
    names: dict[str, int] = {}
    dirs: dict[Path, int] = {}
    for n, ds in enumerate(config.datasets):
        where = f"datasets.{n}"
        if ds.name in names:
            return f"{where}.name", f"{ds.name!r} is also datasets.{names[ds.name]}"
        names[ds.name] = n
        local = Path(os.path.abspath(ds.local_dir))
        if local == Path(local.anchor):
            return f"{where}.local_dir", f"{local} is the root of the filesystem"
        for other, m in dirs.items():
            if inside(local, other) or inside(other, local):
                return (f"{where}.local_dir", f"{local} overlaps datasets.{m}.local_dir "
                        f"{other}")
        dirs[local] = n
        if inside(state, local):
            return f"{where}.local_dir", (f"{local} holds the state directory {state}; an "
                                          "install would swap it away")
    return None
