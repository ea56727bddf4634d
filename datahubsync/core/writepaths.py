"""What each systemd unit may write, derived from the config (``ReadWritePaths=``).

The units run with ``ProtectSystem=strict``: everything is read-only but the
paths listed. A path the config names (a mirror, a dataset directory, a
SQLite ledger) that is missing from the list makes the service fail on its
first write, so every feature declares what its commands write, and the
installer writes one drop-in per unit from that. Read-only inputs (``data_root``,
picture roots, ``logs.log_dir``) are never listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from datahubsync.core.config import LoadedConfig

UNITS = ("sync", "serve", "pictures", "logs")


@dataclass(frozen=True)
class WritePath:
    """One path a unit writes, and why (shown by ``datahubsync config write-paths``)."""

    path: Path
    why: str


# A feature's contribution: for (loaded config, unit), the paths that unit writes.
WritePathProvider = Callable[[LoadedConfig, str], Iterable[WritePath]]


def sqlite_dir(url: str | None) -> Path | None:
    """The directory of a ``sqlite:///`` URL's file (SQLite writes its -wal beside it)."""
    if url and url.startswith("sqlite") and "///" in url:
        path = url.split("///", 1)[1]
        if path and path != ":memory:":
            return Path(path).parent
    return None


def common(loaded: LoadedConfig) -> list[WritePath]:
    """What every unit writes: the state directory and the log file's directory."""
    found = [WritePath(loaded.state_dir, "state_dir")]
    if loaded.config.logging.file is not None:
        found.append(WritePath(loaded.config.logging.file.parent, "logging.file"))
    return found


def write_paths(loaded: LoadedConfig, unit: str,
                providers: Sequence[WritePathProvider]) -> list[WritePath]:
    """Every path ``unit`` writes (deduplicated; a path under another listed one is kept
    out, since the parent covers it)."""
    found = common(loaded)
    for provider in providers:
        found += list(provider(loaded, unit))
    result: list[WritePath] = []
    for item in sorted(found, key=lambda w: len(Path(w.path).absolute().parts)):
        path = Path(item.path).absolute()
        if any(path == r.path or r.path in path.parents for r in result):
            continue
        result.append(WritePath(path, item.why))
    return result
