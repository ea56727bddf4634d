"""The alert rules in packaging/prometheus/ pass promtool, their unit tests pass, a broken
rule fails, and serve's /metrics (fleet gauges included) is valid exposition text."""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import ROOT, Hub, make_dataset, run_cli, write_yaml

RULES = ROOT / "packaging" / "prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (make test installs Debian's prometheus)")
        pytest.skip("promtool is missing")
    return found


def run(*argv: str, cwd: Path = RULES) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_rules_check_and_their_tests_pass() -> None:
    checked = run("check", "rules", "datahubsync.rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "7 rules found" in checked.stdout
    tested = run("test", "rules", "datahubsync.rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_a_broken_rule_fails(tmp_path: Path) -> None:
    broken = (RULES / "datahubsync.rules.yml").read_text().replace(
        "datahubsync_fleet_sync_failed == 1", "datahubsync_fleet_sync_failed ==")
    (tmp_path / "datahubsync.rules.yml").write_text(broken)
    assert run("check", "rules", "datahubsync.rules.yml", cwd=tmp_path).returncode != 0
    wrong = (RULES / "datahubsync.rules.yml").read_text().replace(
        "datahubsync_fleet_host_silent == 1", "datahubsync_fleet_host_silent == 0")
    (tmp_path / "datahubsync.rules.yml").write_text(wrong)
    shutil.copy(RULES / "datahubsync.rules.test.yml", tmp_path)
    assert run("test", "rules", "datahubsync.rules.test.yml", cwd=tmp_path).returncode != 0


def test_metrics_of_serve_are_valid_exposition(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data" / "alpha", files=2)
    hub = Hub(tmp_path, tmp_path / "data", config_extra={"fleet": {
        "expected_hosts": ["h6"]}}).start()
    try:
        hub.wait_ready("alpha")
        cfg = write_yaml(tmp_path / "c.yaml", {
            "state_dir": str(tmp_path / "s"), "hub": {"url": hub.url}, "sync": {"fsync": False},
            "datasets": [{"name": "alpha", "local_dir": str(tmp_path / "l")}],
            "fleet": {"host": "h1"}})
        run_cli(["datasets", "sync"], config=cfg)
        with urllib.request.urlopen(hub.url + "/metrics", timeout=30) as response:
            text = response.read()
    finally:
        hub.stop()
    checked = subprocess.run([promtool(), "check", "metrics"], input=text,
                             capture_output=True, timeout=60)
    problems = [line for line in checked.stdout.decode().splitlines()
                + checked.stderr.decode().splitlines() if "error" in line.lower()]
    assert problems == [], problems
    assert b'datahubsync_fleet_host_ready{host="h1"} 1' in text
