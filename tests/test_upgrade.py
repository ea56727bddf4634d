"""Upgrade in place: a host laid out as the old clients leave it; the first run after
the upgrade downloads nothing installed and up to date, loses and resends nothing."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import yaml

from tests.helpers import Hub, make_dataset, run_cli, tree_bytes, write_yaml
from tests.test_logs_client import KEY, line, public_ips, server_stats, write_log


def old_client_tree(tmp: Path, hub: Hub, old_dir: Path) -> dict[str, bytes]:
    """/opt/datahubsync as the old client left it, and alpha installed by it."""
    entry = hub.wait_ready("alpha")
    local = tmp / "data" / "alpha-copy"
    shutil.copytree(tmp / "hubdata" / "alpha", local)
    old_dir.mkdir(parents=True)
    (old_dir / "config.yaml").write_text(yaml.safe_dump({
        "hub": {"url": hub.url, "timeout": 300},
        "datasets": [{"name": "alpha", "local_dir": str(local)}],
        "logging": {"level": "INFO", "file": "logs/sync.log"},
        "retry": {"count": 3}}))  # a key of the old client's that ours does not know
    (old_dir / ".last_sync.json").write_text(json.dumps({"alpha": entry["last_updated"]}))
    (old_dir / "logs").mkdir()
    (old_dir / "logs" / "sync.log").write_text("2026-11-30 08:15:00 - INFO - synced alpha\n")
    (old_dir / "sync_client.py").write_text("# the old client\n")
    return {p.name: p.read_bytes() for p in old_dir.rglob("*") if p.is_file()}


def test_upgrade_from_an_old_client_tree_downloads_nothing(tmp_path: Path) -> None:
    make_dataset(tmp_path / "hubdata" / "alpha", files=5)
    hub = Hub(tmp_path, tmp_path / "hubdata").start()
    try:
        old_dir = tmp_path / "opt" / "datahubsync"
        old_files = old_client_tree(tmp_path, hub, old_dir)
        new_config = tmp_path / "etc" / "config.yaml"
        state = tmp_path / "var" / "lib" / "datahubsync"
        done = run_cli(["--json", "config", "upgrade-from", str(old_dir), "--to",
                        str(new_config), "--state-dir", str(state)]).json()
        assert any("config" in c and "retry" in c for c in done["carried"])  # dropped, named
        assert any(".last_sync.json" in c and "alpha" in c for c in done["carried"])
        assert stat.S_IMODE(new_config.stat().st_mode) == 0o600
        converted = yaml.safe_load(new_config.read_text())
        assert converted["logging"]["file"] == str(old_dir / "logs" / "sync.log")
        assert converted["state_dir"] == str(state)
        result = run_cli(["--json", "datasets", "sync"], config=new_config).json()
        (item,) = result["datasets"]
        assert item["status"] == "up_to_date" and item["bytes_downloaded"] == 0, item
        # the old files are all there, unchanged (the log only grew)
        for path in old_dir.rglob("*"):
            if path.is_file() and path.name != "sync.log":
                assert path.read_bytes() == old_files[path.name]
        assert (old_dir / "logs" / "sync.log").read_bytes().startswith(old_files["sync.log"])
        again = run_cli(["--json", "config", "upgrade-from", str(old_dir), "--to",
                         str(new_config), "--state-dir", str(state)]).json()
        assert again["carried"] == [] and len(again["skipped"]) == 2  # never overwrites ours
    finally:
        hub.stop()


def test_the_old_uploaders_offsets_and_pending_queue_are_taken(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    hub = Hub(tmp_path, tmp_path / "empty", logs_ingest={"api_keys": [KEY]}).start()
    try:
        ips = public_ips(30, seed=21)
        sinkhole = tmp_path / "sinkhole"
        done_part = [line(ip, hour=10) for ip in ips[:20]]  # the old uploader sent these
        log_file = write_log(sinkhole, "2025-12-09", 10, done_part + [
            line(ip, hour=10) for ip in ips[20:25]])
        old_state = tmp_path / "oldtmp"
        old_state.mkdir()
        (old_state / "file_offsets.json").write_text(json.dumps(
            {str(log_file): len("".join(done_part).encode())}))
        (old_state / "pending_upload_queue.json").write_text(json.dumps([
            {"ip": ip, "timestamp": "2025-12-09 09:00:01", "date": "2025-12-09",
             "log_hour": 9, "botnet_type": "ramnit"} for ip in ips[25:]]))
        cfg = write_yaml(tmp_path / "logs.yaml", {"state_dir": str(tmp_path / "state"), "logs": {
            "log_dir": str(sinkhole), "api_endpoint": hub.url + "/api/v1/logs/ips",
            "api_key": KEY, "legacy_state_dir": str(old_state), "stable_seconds": 60}})
        result = run_cli(["--json", "logs", "once"], config=cfg)
        assert "continue where it stopped" in result.err and "5 records not yet sent" in \
            result.err
        assert result.json()["uploaded"] == 10  # 5 new lines + 5 pending, none of the 20
        stats = server_stats(hub)
        assert stats["distinct_ips"] == 10 and stats["total_records"] == 10
        assert run_cli(["--json", "logs", "once"], config=cfg).json()["uploaded"] == 0
        assert json.loads((old_state / "file_offsets.json").read_text())  # left as it was
    finally:
        hub.stop()


def test_install_client_carries_an_old_client_over(tmp_path: Path) -> None:
    from tests.frozen import frozen_binary
    from tests.test_packaging import install

    make_dataset(tmp_path / "hubdata" / "alpha", files=5)
    hub = Hub(tmp_path, tmp_path / "hubdata").start()
    try:
        root = tmp_path / "root"
        old_dir = root / "opt" / "datahubsync"
        old_files = old_client_tree(tmp_path, hub, old_dir)
        result = install(root, frozen_binary(), "--setup-crontab")
        assert result.returncode == 0, result.stderr
        assert "found the old client" in result.stdout and "carried over" in result.stdout
        state = root / "var" / "lib" / "datahubsync"
        assert json.loads((state / ".last_sync.json").read_text()) == json.loads(
            old_files[".last_sync.json"])
        config = root / "etc" / "datahubsync" / "config.yaml"
        assert yaml.safe_load(config.read_text())["state_dir"] == "/var/lib/datahubsync"
        synced = run_cli(["--json", "datasets", "sync"], config=config,
                         env={"DATAHUBSYNC_STATE_DIR": str(state)}).json()
        assert synced["datasets"][0]["status"] == "up_to_date"
        assert synced["datasets"][0]["bytes_downloaded"] == 0
        assert (old_dir / "sync_client.py").exists() and (old_dir / "config.yaml").exists()
        assert tree_bytes(tmp_path / "data" / "alpha-copy") == tree_bytes(
            tmp_path / "hubdata" / "alpha")
        assert os.access(old_dir / ".last_sync.json", os.R_OK)
    finally:
        hub.stop()


def _old_hub_zip(cache: Path, data: Path, name: str, version: str) -> Path:
    """A package as the existing hub writes it: its name, deflate, no side file."""
    import zipfile

    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{name}_{version}.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(p for p in (data / name).rglob("*") if p.is_file()):
            zf.write(file, file.relative_to(data / name).as_posix())
    return path


def test_serve_reuses_the_existing_hubs_complete_packages(tmp_path: Path) -> None:
    import hashlib

    data = tmp_path / "data"
    make_dataset(data / "alpha", files=6)
    make_dataset(data / "beta", files=4, seed=3)
    make_dataset(data / "gamma", files=3, seed=5)
    cache = tmp_path / "oldcache"
    alpha = _old_hub_zip(cache, data, "alpha", "20261130_150000")
    half = _old_hub_zip(cache, data, "beta", "20261130_150000")
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])  # still being written
    _old_hub_zip(cache, data, "gamma", "20261130_150000")
    (data / "gamma" / "sz" / "600005.csv").write_bytes(b"changed since\r\n")
    hub = Hub(tmp_path, data, cache_dir=str(cache)).start()
    try:
        adopted = hub.wait_ready("alpha")
        assert adopted["version"] == "20261130_150000"
        assert adopted["sha256"] == hashlib.sha256(alpha.read_bytes()).hexdigest()
        assert hub.wait_ready("beta")["version"] != "20261130_150000"  # built anew
        assert hub.wait_ready("gamma")["version"] != "20261130_150000"  # data changed
        assert "adopted the existing hub's alpha_20261130_150000.zip" in hub.log.read_text()
        cfg = write_yaml(tmp_path / "c.yaml", {
            "state_dir": str(tmp_path / "cs"), "hub": {"url": hub.url},
            "sync": {"fsync": False},
            "datasets": [{"name": "alpha", "local_dir": str(tmp_path / "l" / "alpha")}]})
        assert run_cli(["--json", "datasets", "sync"], config=cfg).json()["datasets"][0][
            "status"] == "installed"
        assert tree_bytes(tmp_path / "l" / "alpha") == tree_bytes(data / "alpha")
    finally:
        hub.stop()
