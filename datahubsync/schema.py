"""The file's config schema: core's sections plus each feature's, listed once.

Core's sections (state_dir, hub, s3, logging, the HTTP server's keys of ``serve``
and the client's report keys of ``fleet``) live in ``core/config.py``; each
feature declares its own sections and keys in its ``config.py``. Composed here,
in a module that imports nothing else of the features, so that every command
pays only for the schema at start-up (doctor checks and write paths are in
``features.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import Field

from datahubsync.batch.config import BatchConfig
from datahubsync.core import config as core_config
from datahubsync.core.config import COMPOSED, CoreConfig, LoadedConfig, ReportingConfig, ServeCore
from datahubsync.datasets.config import (
    DatasetConfig,
    DatasetsServeKeys,
    SyncConfig,
    datasets_path_problem,
)
from datahubsync.fleet.config import FleetHubKeys
from datahubsync.logs.config import LogsConfig, LogsServeKeys
from datahubsync.pictures.config import PicturesConfig, PicturesServeKeys


class ServeConfig(ServeCore, DatasetsServeKeys, LogsServeKeys, PicturesServeKeys):
    """``serve:``: the HTTP server's keys and what each feature serves."""

    model_config = COMPOSED


class FleetConfig(ReportingConfig, FleetHubKeys):
    """``fleet:``: what every client reports, and the hub's view of the reports."""

    model_config = COMPOSED


class Config(CoreConfig):
    """The whole configuration file."""

    model_config = COMPOSED

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
