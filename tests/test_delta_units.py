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


def _entry(path: str, body: bytes) -> dict[str, object]:
    return {"path": path, "size": len(body), "sha256": hashlib.sha256(body).hexdigest(),
            "mtime_ns": 1_700_000_000_000_000_000}


def test_an_adopted_obsolete_tree_ends_up_exactly_the_new_version(tmp_path: Path) -> None:
    """The obsolete tree becomes the staging directory: stale files, directories and
    links go, files sit where directories were and back, prefixes are extended in place,
    shared inodes stay, a non-prefix is rebuilt; nothing else survives."""
    local, staging, old = tmp_path / "local", tmp_path / "staging", tmp_path / "old"
    for d in (local / "a", local / "keep", staging, old / "a", old / "gone" / "deep",
              old / "clash"):
        d.mkdir(parents=True)
    (local / "a" / "grow.csv").write_bytes(b"r1\nr2\nr3\n")
    (old / "a" / "grow.csv").write_bytes(b"r1\n")  # two days old: a prefix
    grow_inode = (old / "a" / "grow.csv").stat().st_ino
    (local / "a" / "edited.csv").write_bytes(b"e1\ne2\n")
    (old / "a" / "edited.csv").write_bytes(b"XX\n")  # same length as a prefix, other bytes
    (local / "keep" / "same.csv").write_bytes(b"same\n")
    os.link(local / "keep" / "same.csv", old / "keep.csv")  # unrelated name: goes
    (old / "gone" / "deep" / "stale.csv").write_bytes(b"stale\n")
    (old / "stale.csv").write_bytes(b"stale\n")
    (old / "clash" / "inner.csv").write_bytes(b"a directory where a file now is\n")
    (old / "link.csv").symlink_to(local / "keep" / "same.csv")
    new_files = {"a/grow.csv": b"r1\nr2\nr3\nr4\n", "a/edited.csv": b"e1\ne2\ne3\n",
                 "keep/same.csv": b"same\n", "clash": b"now a file\n",
                 "link.csv": b"a real file\n"}
    manifest = {"version": "v3", "files": [_entry(p, b) for p, b in new_files.items()]}
    doc = {"format": 1, "to": "v3", "whole": ["clash", "link.csv"], "deleted": ["x.csv"],
           "appended": [{"path": "a/grow.csv", "old_size": 9},
                        {"path": "a/edited.csv", "old_size": 6}]}
    delta = _delta_zip(tmp_path / "d.zip", doc, {
        "append/a/grow.csv": b"r4\n", "append/a/edited.csv": b"e3\n",
        "whole/clash": b"now a file\n", "whole/link.csv": b"a real file\n"})
    stats = build_tree(local, delta, manifest, staging, recycle_from=[old])
    assert not old.exists()  # adopted
    found = {str(p.relative_to(staging)): p.read_bytes()
             for p in staging.rglob("*") if p.is_file() or p.is_symlink()}
    assert found == new_files
    assert not any(p.is_symlink() for p in staging.rglob("*"))
    assert sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_dir()) \
        == ["a", "keep"]
    assert (staging / "a" / "grow.csv").stat().st_ino == grow_inode  # extended in place
    assert (staging / "keep" / "same.csv").stat().st_ino == \
        (local / "keep" / "same.csv").stat().st_ino
    assert (stats.appended, stats.unchanged) == (2, 1)
    # the installed version is untouched
    assert (local / "a" / "grow.csv").read_bytes() == b"r1\nr2\nr3\n"
