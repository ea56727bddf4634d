"""Upgrade in place: carry over what the old clients left, so nothing moves twice.

The old datasets client lives in one directory (``/opt/datahubsync``): its
``config.yaml`` (``hub``, ``datasets``, ``logging``: the same keys as ours),
``.last_sync.json`` (``{"<dataset>": "<last_updated as the hub sent it>"}``, the
same file as ours) and ``logs/sync.log``. With them carried over, the first
08:15 run after the upgrade finds every installed dataset up to date and
downloads nothing. The old pictures client's ``sync_progress.json`` is named
in ``pictures.legacy_progress_file``; the old uploader's offsets and pending
queue (``/tmp`` by default) are taken into the logs queue. Every step says
what it did; nothing of the old files is changed or deleted, and nothing ours
that exists already is overwritten.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from datahubsync.core.statefile import write_bytes_atomic

OLD_CONFIG_SECTIONS = ("hub", "datasets", "logging")


@dataclass
class Upgrade:
    """What ``upgrade_from`` did (or would do, with ``dry_run``)."""

    carried: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _absolute(value: Any, base: Path) -> Any:
    path = Path(str(value)).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def convert_old_config(old: Path, state_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """The old client's config as ours: its sections kept (relative paths made absolute
    against its directory), other keys dropped and named, ``state_dir`` added."""
    data = yaml.safe_load(old.read_text("utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{old}: not a mapping of sections")
    dropped = sorted(str(k) for k in data if k not in OLD_CONFIG_SECTIONS)
    new: dict[str, Any] = {k: data[k] for k in OLD_CONFIG_SECTIONS if k in data}
    for ds in new.get("datasets") or []:
        if isinstance(ds, dict) and ds.get("local_dir"):
            ds["local_dir"] = _absolute(ds["local_dir"], old.parent)
    logging_cfg = new.get("logging")
    if isinstance(logging_cfg, dict) and logging_cfg.get("file"):
        logging_cfg["file"] = _absolute(logging_cfg["file"], old.parent)
    new["state_dir"] = str(state_dir)
    return new, dropped


def upgrade_from(old_dir: Path, config_path: Path, state_dir: Path, *,
                 uploader_dir: Path = Path("/tmp"), dry_run: bool = False,
                 write_state_dir: Path | None = None) -> Upgrade:
    """Carry over the old clients' config and state (see the module docstring).

    ``state_dir`` is what the new config names; ``write_state_dir`` where its files
    go now (the same, except when installing into a directory tree).
    """
    done = Upgrade()
    target_state = write_state_dir or state_dir
    old_config = old_dir / "config.yaml"
    if old_config.is_file() and not config_path.exists():
        new, dropped = convert_old_config(old_config, state_dir)
        if not dry_run:
            text = "# carried over from " + str(old_config) + " by datahubsync\n" + \
                yaml.safe_dump(new, allow_unicode=True, sort_keys=False)
            write_bytes_atomic(config_path, text.encode("utf-8"), mode=0o600)
        done.carried.append(f"config: {old_config} -> {config_path} (hub, datasets, logging"
                            + (f"; dropped unknown keys: {', '.join(dropped)}" if dropped
                               else "") + ")")
    elif old_config.is_file():
        done.skipped.append(f"config: {config_path} exists; {old_config} left as it is")
    for name in (".last_sync.json", "last_sync.json"):
        old_state = old_dir / name
        if not old_state.is_file():
            continue
        ours = target_state / ".last_sync.json"
        try:
            versions = json.loads(old_state.read_text("utf-8-sig"))
        except (OSError, ValueError) as exc:
            done.skipped.append(f"{old_state}: unreadable ({exc}); datasets download again")
            break
        if not isinstance(versions, dict):
            done.skipped.append(f"{old_state}: not a JSON object; datasets download again")
        elif ours.exists():
            done.skipped.append(f"{ours} exists; {old_state} left as it is")
        else:
            if not dry_run:
                target_state.mkdir(parents=True, exist_ok=True)
                shutil.copy2(old_state, ours)
            done.carried.append(f"dataset versions: {old_state} -> {ours} ({len(versions)} "
                                f"datasets: {', '.join(sorted(map(str, versions)))}); those "
                                "installed and up to date are not downloaded again")
        break
    progress = old_dir / "sync_progress.json"
    if progress.is_file():
        done.carried.append(f"pictures: {progress} found; set pictures.legacy_progress_file: "
                            f"{progress} and the first pass continues where it stopped")
    if (uploader_dir / "file_offsets.json").is_file() or \
            (uploader_dir / "pending_upload_queue.json").is_file():
        done.carried.append(f"logs: the old uploader's state in {uploader_dir} is taken by the "
                            "first `datahubsync logs` pass (logs.legacy_state_dir)")
    return done
