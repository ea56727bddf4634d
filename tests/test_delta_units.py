"""Delta building and applying in-process: shrunk files, hostile deltas and manifests."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from datahubsync.core.errors import IntegrityError
from datahubsync.datasets.delta_apply import build_tree, safe_relpath
from datahubsync.datasets.hub import Builder, BuildSettings
from datahubsync.datasets.store import PackageStore


def build(data: Path, store: PackageStore, clock: list[int]) -> None:
    settings = BuildSettings(data, None, 0, 0.0, 2, 1, 1, dt.UTC, keep_deltas=2,
                             max_delta_share=1.0)
    Builder(settings, store, wall_clock=lambda: clock[0]).run_once(force=True)
    clock[0] += 1


def test_truncated_or_rewritten_files_travel_whole(tmp_path: Path) -> None:
    data = tmp_path / "data" / "d"
    data.mkdir(parents=True)
    rows = [os.urandom(32).hex().encode() + b"\n" for _ in range(300)]  # incompressible
    (data / "grow.csv").write_bytes(b"".join(rows[:100]))
    (data / "shrink.csv").write_bytes(b"".join(rows[100:200]))
    (data / "same-size.csv").write_bytes(b"".join(rows[200:]))
    store, clock = PackageStore(tmp_path / "cache"), [10**9]
    build(tmp_path / "data", store, clock)
    (data / "grow.csv").write_bytes(b"".join(rows[:101]))
    (data / "shrink.csv").write_bytes(b"".join(rows[100:199]))
    (data / "same-size.csv").write_bytes(b"".join(rows[201:]) + rows[200])
    build(tmp_path / "data", store, clock)
    [delta] = store.deltas("d")
    with zipfile.ZipFile(store.cache_dir / delta.file) as zf:
        doc = json.loads(zf.read("delta.json"))
        assert zf.read("append/grow.csv") == rows[100]
    assert doc["whole"] == ["same-size.csv", "shrink.csv"]
    assert [a["path"] for a in doc["appended"]] == ["grow.csv"]
    assert doc["appended"][0]["old_sha256"] == hashlib.sha256(b"".join(rows[:100])).hexdigest()


@pytest.mark.parametrize("path", ["../escape.csv", "/etc/passwd", "a/../../b", "C:/x",
                                  "a\\..\\b", "", "a//b", "./a", "a/\0b", 7])
def test_unsafe_manifest_paths_are_refused(path: object) -> None:
    with pytest.raises(IntegrityError, match="unsafe path"):
        safe_relpath(path)


def test_hostile_delta_cannot_write_outside_staging(tmp_path: Path) -> None:
    local, delta_dir, staging = tmp_path / "local", tmp_path / "delta", tmp_path / "staging"
    for d in (local, delta_dir / "whole", staging):
        d.mkdir(parents=True)
    (delta_dir / "whole" / "x.csv").write_bytes(b"x")
    sha = hashlib.sha256(b"x").hexdigest()
    manifest = {"version": "v2", "files": [{"path": "../outside.csv", "size": 1,
                                            "sha256": sha, "mtime_ns": 0}]}
    (delta_dir / "delta.json").write_text(json.dumps(
        {"format": 1, "to": "v2", "whole": ["../outside.csv"], "appended": [], "deleted": []}))
    with pytest.raises(IntegrityError, match="unsafe path"):
        build_tree(local, delta_dir, manifest, staging)
    assert not (tmp_path / "outside.csv").exists()
    # a delta for another version is refused before anything is built
    (delta_dir / "delta.json").write_text(json.dumps({"format": 1, "to": "v1"}))
    with pytest.raises(IntegrityError, match="leads to v1"):
        build_tree(local, delta_dir, manifest, staging)
