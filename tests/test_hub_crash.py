"""`serve` killed at each named step of publishing a package: clients never see half a one.

The hub is started with ``DATAHUBSYNC_CRASH_AT`` and must die there (SIGKILL of
the process that builds); restarted normally it publishes a complete version,
and a real client syncs exactly the data.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.crashkit import KILLED, crash_env
from tests.helpers import Hub, clean_env, cli_argv, client_config, make_dataset, run_cli, tree_bytes
from tests.test_sync_e2e import _touch_all

KILLED_AT = ["hub.manifest_written", "hub.package_renamed", "hub.package_published",
             "hub.delta_renamed"]


def die_at(hub: Hub, point: str) -> None:
    """Start ``hub`` armed with ``point``; it must die of SIGKILL there."""
    log = hub.log.open("ab")
    proc = subprocess.Popen(cli_argv() + ["--config", str(hub.config), "serve", "--port-file",
                                          str(hub.port_file)],
                            stdout=subprocess.DEVNULL, stderr=log, env=clean_env(crash_env(point)))
    try:
        code = proc.wait(120)
    finally:
        log.close()
    assert code == KILLED, f"{point}: serve exited {code}:\n{hub.log.read_text()[-3000:]}"


def synced(cfg: Path) -> dict[str, object]:
    (item,) = json.loads(run_cli(["datasets", "sync", "--json"], config=cfg).out)["datasets"]
    return item


def test_hub_killed_while_publishing_serves_old_or_new_whole(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_dataset(data / "alpha", files=20, rows=40, seed=4)
    hub = Hub(tmp_path, data, workers=1, debounce=0.2)
    for point in KILLED_AT[:3]:  # first build: no version yet, then a complete one
        die_at(hub, point)
    hub.start()
    try:
        first = hub.wait_ready("alpha")
        cfg = client_config(tmp_path, hub.url, ["alpha"])
        assert synced(cfg)["status"] == "installed"
        assert tree_bytes(tmp_path / "local" / "alpha") == tree_bytes(data / "alpha")
    finally:
        hub.stop()
    _touch_all(data / "alpha", b"2026-11-25,1,2,3\r\n")
    die_at(hub, "hub.delta_renamed")  # new version's delta renamed, nothing published
    hub.start()
    try:
        second = hub.wait_ready("alpha", newer_than=first["version"])
        cfg = client_config(tmp_path, hub.url, ["alpha"])
        item = synced(cfg)
        assert item["status"] == "installed" and second["version"] != first["version"]
        assert tree_bytes(tmp_path / "local" / "alpha") == tree_bytes(data / "alpha")
    finally:
        hub.stop()
    cache = [p.name for p in (tmp_path / "hubstate").rglob("*") if p.name.startswith(".")]
    assert not [n for n in cache if n.endswith(".tmp")], cache  # temp files cleaned at start
