"""Every file and directory the tool keeps under its state directory, in one list.

Features, ``doctor``, the installer's systemd write paths and the README read
this list instead of composing paths themselves, so a new file cannot be
missed by one of them. The names are only paths: nothing here imports a
feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StateLayout:
    """The paths below one state directory (``state_dir``, default /var/lib/datahubsync)."""

    root: Path

    # -- datasets sync (client) ------------------------------------------------
    @property
    def last_sync(self) -> Path:
        """``{"<dataset>": "<last_updated as the hub sent it>"}``, read by old clients too."""
        return self.root / ".last_sync.json"

    @property
    def datasets_lock(self) -> Path:
        return self.root / "datasets.lock"

    @property
    def datasets_dir(self) -> Path:
        """Per dataset: the install record and, during an install, its journal."""
        return self.root / "datasets"

    @property
    def downloads(self) -> Path:
        """``NAME.zip.part`` / ``NAME.delta.part`` and their side files: resumable."""
        return self.root / "downloads"

    # -- serve (hub) -------------------------------------------------------------
    @property
    def packages(self) -> Path:
        """Packages, manifests and deltas, when ``serve.cache_dir`` is not set."""
        return self.root / "packages"

    @property
    def metrics(self) -> Path:
        """prometheus_client's multiprocess files of the serve workers."""
        return self.root / "metrics"

    @property
    def serve_dir(self) -> Path:
        return self.root / "serve"

    @property
    def last_send(self) -> Path:
        return self.serve_dir / "pictures-last-send.json"

    @property
    def fleet_db(self) -> Path:
        return self.serve_dir / "fleet.db"

    # -- logs --------------------------------------------------------------------
    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def logs_queue(self) -> Path:
        return self.logs_dir / "queue.db"

    @property
    def logs_lock(self) -> Path:
        return self.logs_dir / "logs.lock"

    @property
    def ingest_db(self) -> Path:
        return self.logs_dir / "ingest.db"

    # -- pictures ----------------------------------------------------------------
    @property
    def pictures_dir(self) -> Path:
        return self.root / "pictures"

    @property
    def pictures_ledger(self) -> Path:
        return self.pictures_dir / "ledger.db"

    @property
    def pictures_lock(self) -> Path:
        return self.pictures_dir / "pictures.lock"

    @property
    def pictures_wakeup(self) -> Path:
        """The datagram socket ``pictures run`` sleeps on; ``serve`` pokes it."""
        return self.pictures_dir / "wake.sock"

    # -- batch -------------------------------------------------------------------
    @property
    def batch_dir(self) -> Path:
        return self.root / "batch"

    @property
    def batch_tasks(self) -> Path:
        return self.batch_dir / "tasks"

    @property
    def batch_locks(self) -> Path:
        return self.batch_dir / "locks"

    @property
    def batch_logs(self) -> Path:
        return self.batch_dir / "logs"

    # -- fleet reporting (every client) --------------------------------------------
    @property
    def fleet_outbox(self) -> Path:
        """Reports not delivered yet (bounded), sent with the next one."""
        return self.root / "fleet-outbox.json"

    def directories(self) -> list[Path]:
        """Every directory above, for write-path lists (systemd ReadWritePaths)."""
        return [self.root, self.datasets_dir, self.downloads, self.packages, self.metrics,
                self.serve_dir, self.logs_dir, self.pictures_dir, self.batch_dir]
