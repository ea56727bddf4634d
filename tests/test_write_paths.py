"""Every path a unit's command writes is in that unit's ReadWritePaths (from the config).

Each unit's real command runs on a config in a fresh tree; every file it creates or
changes anywhere in the tree must lie under a path `config write-paths` lists for
that unit, and read-only inputs must not be listed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.helpers import Hub, make_dataset, run_cli, wait_until, write_yaml
from tests.pictures_client_kit import PREFIX, TOKEN, make_pictures, sqlite_tasks, start_server
from tests.test_logs_client import line, write_log


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for base, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            found[path] = (st.st_mtime_ns, st.st_size)
    return found


def written(before: dict[str, Any], after: dict[str, Any]) -> set[Path]:
    return {Path(p) for p, v in after.items() if before.get(p) != v}


def allowed(config: Path, unit: str) -> list[Path]:
    doc = run_cli(["--json", "config", "write-paths", "--unit", unit], config=config).json()
    return [Path(p["path"]) for p in doc["paths"]]


def assert_covered(changed: set[Path], paths: list[Path], unit: str) -> None:
    outside = sorted(str(p) for p in changed
                     if not any(p == a or a in p.parents for a in paths))
    assert not outside, f"{unit} wrote outside its write paths {paths}: {outside[:10]}"


def test_sync_unit(tmp_path: Path, hub: Hub) -> None:
    tree = tmp_path / "host"
    cfg = write_yaml(tmp_path / "sync.yaml", {
        "state_dir": str(tree / "state"), "hub": {"url": hub.url},
        "logging": {"file": str(tree / "log" / "sync.log")},
        "datasets": [{"name": "alpha", "local_dir": str(tree / "data" / "alpha")},
                     {"name": "beta", "local_dir": str(tree / "other" / "beta")}],
        "sync": {"fsync": False}})
    paths = allowed(cfg, "sync")
    (tree / "data").mkdir(parents=True)
    before = snapshot(tree)
    hub.wait_ready("alpha")
    hub.wait_ready("beta")
    run_cli(["datasets", "sync"], config=cfg)
    changed = written(before, snapshot(tree))
    assert any("alpha" in str(p) for p in changed) and any("beta" in str(p) for p in changed)
    assert_covered(changed, paths, "sync")


def test_pictures_unit(tmp_path: Path) -> None:
    tree = tmp_path / "host"
    pics = make_pictures(tmp_path / "srv", 3)
    url, table = sqlite_tasks(tmp_path, pics.tasks)
    server = start_server(tmp_path, pics.root)
    try:
        cfg = write_yaml(tmp_path / "pics.yaml", {
            "state_dir": str(tree / "state"), "pictures": {
                "source": "sql", "database_url": url, "table": table, "token": TOKEN,
                "server_url": server.url, "local_root": str(tree / "mirror"),
                "ledger_url": f"sqlite:///{tree / 'ledgers' / 'pic.db'}"}})
        paths = allowed(cfg, "pictures")
        assert tree / "mirror" in paths and tree / "ledgers" in paths
        tree.mkdir(exist_ok=True)
        before = snapshot(tree)
        run_cli(["pictures", "once"], config=cfg)
        changed = written(before, snapshot(tree))
        assert len([p for p in changed if p.suffix == ".jpg"]) == 24
        assert_covered(changed, paths, "pictures")
    finally:
        server.stop()


def test_logs_unit(tmp_path: Path, hub: Hub) -> None:
    tree = tmp_path / "host"
    sinkhole = tree / "sinkhole"
    write_log(sinkhole, "2025-12-09", 10, [line("8.8.8.8", hour=10)])
    cfg = write_yaml(tmp_path / "logs.yaml", {"state_dir": str(tree / "state"), "logs": {
        "log_dir": str(sinkhole), "api_endpoint": hub.url + "/api/v1/logs/ips",
        "api_key": "none-set", "max_retries": 0}})
    paths = allowed(cfg, "logs")
    assert not any(sinkhole == p or p in sinkhole.parents for p in paths)  # read only
    before = snapshot(tree)
    run_cli(["logs", "once"], config=cfg, expect=None)
    changed = written(before, snapshot(tree))
    assert any("queue.db" in str(p) for p in changed)
    assert_covered(changed, paths, "logs")


def test_serve_unit(tmp_path: Path) -> None:
    tree = tmp_path / "host"
    make_dataset(tree / "data" / "alpha", files=3)
    pictures_root = tree / "pics"
    pictures_root.mkdir(parents=True)
    hub = Hub(tmp_path, tree / "data", cache_dir=str(tree / "cache"),
              picture_roots=[{"prefix": PREFIX, "path": str(pictures_root)}],
              logs_ingest={"api_keys": ["k"]}, api_tokens=["t"],
              config_extra={"state_dir": str(tree / "state"), "pictures": {
                  "source": "push", "ledger_url": f"sqlite:///{tree / 'ledgers' / 'l.db'}"}})
    paths = allowed(hub.config, "serve")
    assert tree / "cache" in paths and tree / "ledgers" in paths
    assert not any(p == tree / "data" or p in (tree / "data").parents for p in paths)
    before = snapshot(tree)
    hub.start()
    try:
        hub.wait_ready("alpha")
        from tests.helpers import call_json
        assert call_json(hub.url + "/api/v1/logs/ips", "POST",
                         {"botnet_type": "x", "ip_data": [{"ip": "8.8.8.8"}]},
                         headers={"X-API-Key": "k"})[0] == 200
        assert call_json(hub.url + "/api/v1/pictures/tasks", "POST",
                         {"photoUrl": "http://127.0.0.1:9/a.jpg", "cameraCode": "C"},
                         token="t")[0] == 200
        wait_until(lambda: any(p.suffix == ".zip" for p in written(before, snapshot(tree))),
                   "a package in the cache")
    finally:
        hub.stop()
    changed = written(before, snapshot(tree))
    assert_covered(changed, paths, "serve")
