"""Client state: ``.last_sync.json`` (shared with the old client) and install records.

``.last_sync.json`` keeps the old client's exact shape, ``{"<dataset>":
"<last_updated as the hub sent it>"}``, so old and new clients can take
turns. What only we need (previous versions for rollback, a version to skip
after a rollback) lives in ``datasets/<name>.json`` beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datahubsync.core.statefile import read_json, write_json_atomic

LAST_SYNC = ".last_sync.json"


@dataclass
class InstalledVersion:
    last_updated: str
    version: str | None = None
    sha256: str | None = None
    installed_at: str | None = None
    path: str | None = None  # where a previous version is kept


@dataclass
class InstallRecord:
    """What is installed for one dataset, and what can be rolled back to."""

    current: InstalledVersion | None = None
    previous: list[InstalledVersion] = field(default_factory=list)
    skip_last_updated: str | None = None  # a version rolled back from: do not reinstall it

    @classmethod
    def from_json(cls, data: Any) -> InstallRecord:
        if not isinstance(data, dict):
            return cls()
        current = data.get("current")
        return cls(
            current=InstalledVersion(**current) if isinstance(current, dict) else None,
            previous=[InstalledVersion(**p) for p in data.get("previous", [])
                      if isinstance(p, dict)],
            skip_last_updated=data.get("skip_last_updated"),
        )


class ClientState:
    """Reads and writes the client's state files in ``state_dir``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)

    @property
    def last_sync_path(self) -> Path:
        return self.state_dir / LAST_SYNC

    def last_sync(self) -> dict[str, str]:
        data = read_json(self.last_sync_path, {})
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items() if v is not None}

    def set_last_sync(self, name: str, last_updated: str) -> None:
        data = self.last_sync()
        data[name] = last_updated
        write_json_atomic(self.last_sync_path, data)

    def record_path(self, name: str) -> Path:
        return self.state_dir / "datasets" / f"{name}.json"

    def record(self, name: str) -> InstallRecord:
        return InstallRecord.from_json(read_json(self.record_path(name), {}))

    def save_record(self, name: str, record: InstallRecord) -> None:
        write_json_atomic(self.record_path(name), asdict(record))

    def journal_path(self, name: str) -> Path:
        return self.state_dir / "datasets" / f"{name}.install.json"

    def part_path(self, name: str) -> Path:
        return self.state_dir / "downloads" / f"{name}.zip.part"
