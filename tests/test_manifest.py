"""Manifests: per file of each published version, its path, size, mtime and sha256."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

from datahubsync.datasets.hub import Builder, BuildSettings
from datahubsync.datasets.store import PackageStore
from tests.helpers import Hub, call_json, make_dataset, run_cli, write_yaml


def expected_files(root: Path) -> list[dict[str, object]]:
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            found.append({"path": path.relative_to(root).as_posix(), "size": len(data),
                          "mtime_ns": path.stat().st_mtime_ns,
                          "sha256": hashlib.sha256(data).hexdigest()})
    return sorted(found, key=lambda f: str(f["path"]))


def test_hub_serves_the_manifest_of_the_package_it_serves(hub: Hub, data_root: Path) -> None:
    entry = hub.wait_ready("alpha")
    assert entry["manifest"] == "manifest/alpha.json"
    status, manifest = call_json(f"{hub.url}/manifest/alpha.json", timeout=10)
    assert status == 200, manifest
    assert manifest["version"] == entry["version"]
    assert manifest["last_updated"] == entry["last_updated"]
    assert manifest["file_count"] == entry["file_count"]
    assert manifest["files"] == expected_files(data_root / "alpha")
    for missing in ("nope.json", "alpha", "..%2Fhub.yaml"):
        status, _ = call_json(f"{hub.url}/manifest/{missing}", timeout=10)
        assert status == 404, f"{missing} was served"


def test_old_manifests_are_pruned_with_their_packages(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_dataset(data / "d", files=2)
    store = PackageStore(tmp_path / "cache")
    settings = BuildSettings(data, None, 0, 0.0, 1, 1, 1, dt.UTC)
    builder = Builder(settings, store, wall_clock=iter(range(10**9, 10**9 + 100)).__next__)
    for round_ in range(3):
        for path in (data / "d").rglob("*.csv"):
            path.write_bytes(path.read_bytes() + b"x")
            os.utime(path, ns=(10**18 + round_, 10**18 + round_))
        builder.run_once()
    versions = sorted(r.version for r in store.records("d"))
    manifests = sorted(p.name for p in (tmp_path / "cache").glob("*.manifest.json"))
    assert manifests == [f"d_{v}.manifest.json" for v in versions]  # current + 1 kept
    current = store.read_manifest("d", versions[-1])
    assert current is not None and current["files"] == expected_files(data / "d")


def test_static_publish_writes_manifests(tmp_path: Path, data_root: Path) -> None:
    config = write_yaml(tmp_path / "hub.yaml", {"state_dir": str(tmp_path / "s"),
                                                 "serve": {"data_root": str(data_root)}})
    out = tmp_path / "site"
    run_cli(["datasets", "publish", "--out", str(out)], config=config)
    catalog = json.loads((out / "api" / "datasets").read_text())
    for entry in catalog["datasets"]:
        manifest = json.loads((out / entry["manifest"]).read_text())
        assert manifest["version"] == entry["version"]
        assert manifest["files"] == expected_files(data_root / entry["name"])
