"""Operations that confused users: --config after the command, doctor for every section,
a serve whose data_root is missing, one rendering of times and empty values."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.helpers import Hub, call_json, make_dataset, run_cli, wait_until, write_yaml


def test_config_is_accepted_after_the_command_too(tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", {"state_dir": str(tmp_path / "s"), "datasets": [
        {"name": "a", "local_dir": str(tmp_path / "a")}]})
    before = run_cli(["--config", str(cfg), "--json", "datasets", "status"])
    after = run_cli(["datasets", "status", "--json", "--config", str(cfg)])
    assert before.json() == after.json() and after.json()["datasets"][0]["name"] == "a"
    missing = run_cli(["datasets", "status", "--config", str(tmp_path / "none.yaml")],
                      expect=2)
    assert "none.yaml: config file not found" in missing.err


def test_doctor_checks_logs_too(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    hub = Hub(tmp_path, tmp_path / "empty", logs_ingest={"api_keys": ["k-ok"]}).start()
    try:
        base = {"state_dir": str(tmp_path / "s"), "logs": {
            "log_dir": str(tmp_path / "sinkhole"), "api_endpoint": hub.url + "/api/v1/logs/ips",
            "api_key": "k-ok", "max_retries": 0}}
        (tmp_path / "sinkhole").mkdir()
        good = run_cli(["--json", "doctor", "--min-free", "0"],
                       config=write_yaml(tmp_path / "good.yaml", base)).json()
        names = {c["name"]: c for c in good["checks"]}
        assert names["logs endpoint"]["ok"] and names["logs health"]["ok"]
        assert names["logs.log_dir"]["ok"]
        base["logs"]["api_key"] = "k-wrong"
        bad = run_cli(["--json", "doctor", "--min-free", "0"], expect=1,
                      config=write_yaml(tmp_path / "bad.yaml", base)).json()
        endpoint = next(c for c in bad["checks"] if c["name"] == "logs endpoint")
        assert not endpoint["ok"] and "logs.api_key" in endpoint["fix"]
        assert "k-wrong" not in json.dumps(bad)
    finally:
        hub.stop()


def test_missing_data_root_is_said_once_and_shown_in_health_and_doctor(tmp_path: Path) -> None:
    hub = Hub(tmp_path, tmp_path / "no-such-dir", workers=2, catalog_poll=0.05).start()
    try:
        wait_until(lambda: "warnings" in call_json(hub.url + "/health")[1],
                   "/health to show the warning")
        status, doc = call_json(hub.url + "/health")
        assert status == 200 and doc["status"] == "ok"
        assert "no-such-dir does not exist" in doc["warnings"][0]
        # the catalog is re-read 20 times a second in each worker: said once each, not more
        wait_until(lambda: hub.log.read_text().count("does not exist") >= 1, "the warning")
        for _ in range(20):
            call_json(hub.url + "/api/datasets")
        assert hub.log.read_text().count("does not exist") <= 2  # one per process
    finally:
        hub.stop()
    result = run_cli(["--json", "doctor", "--min-free", "0"], config=hub.config, expect=1)
    check = next(c for c in result.json()["checks"] if c["name"] == "serve.data_root")
    assert not check["ok"] and "does not exist" in check["detail"]


def test_human_output_shows_no_python_values_and_one_time_format(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data" / "alpha", files=2)
    hub = Hub(tmp_path, tmp_path / "data").start()
    try:
        hub.wait_ready("alpha")
        cfg = write_yaml(tmp_path / "c.yaml", {
            "state_dir": str(tmp_path / "s"), "hub": {"url": hub.url},
            "datasets": [{"name": "alpha", "local_dir": str(tmp_path / "l" / "alpha")},
                         {"name": "beta", "local_dir": str(tmp_path / "l" / "beta")}],
            "logs": {"log_dir": str(tmp_path)}, "sync": {"fsync": False}})
        run_cli(["datasets", "sync"], config=cfg, expect=1)  # beta is not on the hub
        outputs = [run_cli(args, config=cfg, expect=None).out for args in (
            ["datasets", "status"], ["datasets", "list"], ["logs", "status"],
            ["pictures", "status"], ["batch", "list"])]
    finally:
        hub.stop()
    text = "\n".join(outputs)
    assert "None" not in text and "{'" not in text, text
    assert not re.search(r"\d{2}:\d{2}:\d{2}[+-]\d{4}\b", text), text  # no +0000 form
    assert not re.search(r"\b1[78]\d{8}\.\d+", text), text  # no raw epoch floats
    assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", text), text  # one form: a space
