"""Delta building and applying in-process: shrunk files, hostile deltas and manifests."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from datahubsync.core.errors import IntegrityError, UnsafeArchiveError
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


def _delta_zip(path: Path, doc: dict[str, object], members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("delta.json", json.dumps(doc))
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_hostile_delta_cannot_write_outside_staging(tmp_path: Path) -> None:
    local, staging = tmp_path / "local", tmp_path / "staging"
    for d in (local, staging):
        d.mkdir(parents=True)
    sha = hashlib.sha256(b"x").hexdigest()
    manifest = {"version": "v2", "files": [{"path": "../outside.csv", "size": 1,
                                            "sha256": sha, "mtime_ns": 0}]}
    doc = {"format": 1, "to": "v2", "whole": ["../outside.csv"], "appended": [], "deleted": []}
    delta = _delta_zip(tmp_path / "d1.zip", doc, {"whole/x.csv": b"x"})
    with pytest.raises(IntegrityError, match="unsafe path"):
        build_tree(local, delta, manifest, staging)
    assert not (tmp_path / "outside.csv").exists()
    # a member escaping by its own name is refused by the archive checks
    evil = _delta_zip(tmp_path / "d2.zip", dict(doc, whole=[]), {"../../evil": b"x"})
    with pytest.raises(UnsafeArchiveError):
        build_tree(local, evil, {"version": "v2", "files": []}, staging)
    # a delta for another version is refused before anything is built
    other = _delta_zip(tmp_path / "d3.zip", {"format": 1, "to": "v1"}, {})
    with pytest.raises(IntegrityError, match="leads to v1"):
        build_tree(local, other, manifest, staging)
    # and a whole file that does not match the manifest is the delta's fault
    good = {"version": "v2", "files": [{"path": "a.csv", "size": 1, "sha256": sha,
                                        "mtime_ns": 0}]}
    wrong = _delta_zip(tmp_path / "d4.zip", dict(doc, whole=["a.csv"]), {"whole/a.csv": b"y"})
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        build_tree(local, wrong, good, staging)
