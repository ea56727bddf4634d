"""When ``serve`` last sent a picture, kept in a small state file for ``doctor``.

The old picture server restarted itself after 24 hours without a send; we report
that instead (a ``/metrics`` gauge and a ``doctor`` warning). ``doctor`` runs in
another process, and the gauge must survive a restart, so the time lives in
``{state_dir}/serve/pictures-last-send.json``. A send only sets a float in
memory; :meth:`LastSend.sync` writes the file at most every ``interval``
seconds (and at shutdown), and never moves it back in time: worker processes
share the file, and each keeps the newer of the file's value and its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from datahubsync.core.statefile import write_json_atomic

FILENAME = "pictures-last-send.json"
WRITE_INTERVAL = 10.0


def last_send_path(state_dir: Path) -> Path:
    return Path(state_dir) / "serve" / FILENAME


def read_last_send(path: Path) -> float | None:
    """The recorded time (Unix seconds), or None when nothing was recorded or it is unreadable."""
    try:
        value = json.loads(path.read_text()).get("last_send")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


@dataclass
class LastSend:
    """This process's latest send, and the file it shares with the other workers."""

    path: Path
    interval: float = WRITE_INTERVAL
    latest: float | None = None

    def mark(self, when: float) -> None:
        """Record a send (cheap: called once per file sent)."""
        if self.latest is None or when > self.latest:
            self.latest = when

    def sync(self) -> float | None:
        """Merge with the file (write it when ours is newer); returns the newest known time.

        Blocking (file I/O): call it from a thread.
        """
        stored = read_last_send(self.path)
        mine = self.latest
        if mine is not None and (stored is None or mine > stored):
            write_json_atomic(self.path, {"last_send": mine})
            return mine
        return stored
