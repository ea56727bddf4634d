"""The one list of features and what each contributes to the shared mechanisms.

Listed here, not registered by import side effects, so nothing silently drops
out of the frozen binary; ``core`` takes these lists as arguments and never
imports a feature. The config file's schema is composed here too: core's
sections (state_dir, hub, s3, logging, the HTTP server's keys of ``serve`` and
the client's report keys of ``fleet``) plus the sections and keys each feature
declares in its own ``config.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import Field

from datahubsync.batch.config import BatchConfig
from datahubsync.batch.doctor import batch_checks
from datahubsync.core import config as core_config
from datahubsync.core.config import CoreConfig, LoadedConfig, ReportingConfig, ServeCore
from datahubsync.datasets.config import (
    DatasetConfig,
    DatasetsServeKeys,
    SyncConfig,
    datasets_path_problem,
)
from datahubsync.datasets.doctor import dataset_checks
from datahubsync.datasets.writes import dataset_write_paths
from datahubsync.fleet.config import FleetHubKeys
from datahubsync.logs.config import LogsConfig, LogsServeKeys
from datahubsync.logs.doctor import logs_checks
from datahubsync.logs.writes import logs_write_paths
from datahubsync.pictures.config import PicturesConfig, PicturesServeKeys
from datahubsync.pictures.doctor import picture_checks
from datahubsync.pictures.writes import picture_write_paths

# ``datahubsync doctor``: each feature's checks, in the order they are printed.
DOCTOR_CHECKS = (dataset_checks, logs_checks, picture_checks, batch_checks)

# ``datahubsync config write-paths``: what each systemd unit writes (ReadWritePaths=).
WRITE_PATHS = (dataset_write_paths, logs_write_paths, picture_write_paths)


class ServeConfig(ServeCore, DatasetsServeKeys, LogsServeKeys, PicturesServeKeys):
    """``serve:``: the HTTP server's keys and what each feature serves."""


class FleetConfig(ReportingConfig, FleetHubKeys):
    """``fleet:``: what every client reports, and the hub's view of the reports."""


class Config(CoreConfig):
    """The whole configuration file."""

    datasets: list[DatasetConfig] = Field(default_factory=list)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    logs: LogsConfig = Field(default_factory=LogsConfig)
    pictures: PicturesConfig = Field(default_factory=PicturesConfig)
    fleet: FleetConfig = Field(default_factory=FleetConfig)


# Checked at load, after core's own (state_dir, logging.file): (key, why) or None.
PATH_CHECKS = (datasets_path_problem,)


def load_config(explicit: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """The configuration with every feature's sections (ConfigError on any problem)."""
    return core_config.load_config(explicit, environ, Config, PATH_CHECKS)
