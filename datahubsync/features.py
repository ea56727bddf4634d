"""The one list of features and what each contributes to the shared mechanisms.

Listed here, not registered by import side effects, so nothing silently drops
out of the frozen binary; ``core`` takes these lists as arguments and never
imports a feature. The config file's schema (each feature's sections) is
composed the same way in ``schema.py``.
"""

from __future__ import annotations

from datahubsync.batch.doctor import batch_checks
from datahubsync.datasets.doctor import dataset_checks
from datahubsync.datasets.writes import dataset_write_paths
from datahubsync.logs.doctor import logs_checks
from datahubsync.logs.writes import logs_write_paths
from datahubsync.pictures.doctor import picture_checks
from datahubsync.pictures.writes import picture_write_paths

# ``datahubsync doctor``: each feature's checks, in the order they are printed.
DOCTOR_CHECKS = (dataset_checks, logs_checks, picture_checks, batch_checks)

# ``datahubsync config write-paths``: what each systemd unit writes (ReadWritePaths=).
WRITE_PATHS = (dataset_write_paths, logs_write_paths, picture_write_paths)
