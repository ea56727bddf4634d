"""Carry over the old uploader's state, so the first pass after an upgrade neither loses
what it still had to send nor sends again what it had sent.

The old uploader kept (by default in /tmp): ``file_offsets.json`` (path -> byte
offset read so far, or ``{"offset": n}``) and ``pending_upload_queue.json``
(the records not yet acknowledged: a list, or an object holding one). Offsets
are taken only for files that still exist and are at least that long; pending
records are queued as they are. Nothing is taken when our queue already knows
a file: it is newer than the old state. The old files are never changed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from datahubsync.core.jsonsafe import BadJson, parse_json
from datahubsync.logs.queue import FileState, LogQueue
from datahubsync.logs.reader import FP_BYTES, fingerprint


def _read(path: Path) -> Any:
    try:
        return parse_json(path.read_bytes(), str(path))
    except (OSError, BadJson):
        return None


def adopt_old_uploader(queue: LogQueue, state_dir: Path) -> list[str]:
    """What was carried over from the old uploader's files in ``state_dir`` (one line each)."""
    said: list[str] = []
    offsets = _read(state_dir / "file_offsets.json")
    if isinstance(offsets, dict):
        taken = 0
        for name, value in offsets.items():
            offset = value.get("offset") if isinstance(value, dict) else value
            path = Path(name)
            if not isinstance(offset, int) or offset < 0 or queue.file(str(path)) is not None:
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            if st.st_size < offset:
                continue  # rotated or truncated since: read it from the start
            fp = fingerprint(path) if st.st_size >= FP_BYTES else b""
            state = FileState(str(path), st.st_dev, st.st_ino, offset, fp, False)
            queue.commit_chunk(state, [], {}, {})
            taken += 1
        said.append(f"old uploader offsets: {taken} of {len(offsets)} files continue where "
                    f"it stopped ({state_dir / 'file_offsets.json'})")
    pending = _read(state_dir / "pending_upload_queue.json")
    if isinstance(pending, dict):
        pending = next((v for v in pending.values() if isinstance(v, list)), None)
    if isinstance(pending, list) and pending and not queue.meta("adopted_pending"):
        records = [json.dumps(r, ensure_ascii=False) for r in pending if isinstance(r, dict)]
        queue.add_records(records)
        queue.set_meta("adopted_pending", str(len(records)))
        said.append(f"old uploader queue: {len(records)} records not yet sent are queued")
    return said
