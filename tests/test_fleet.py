"""The fleet view: six servers against a real `serve`, the page, the JSON, the CLI, the
gauges; reports never hurt a run; the existing hub without the route keeps working."""

from __future__ import annotations

import datetime as dt
import json
import os
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.crashkit import killed_at
from tests.helpers import Hub, make_dataset, run_cli, wait_until, write_yaml
from tests.test_sync_e2e import _touch_all

ROW = b"2026-11-25,1,2,3\r\n"


def host_config(tmp: Path, hub_url: str, host: str, **fleet: Any) -> Path:
    return write_yaml(tmp / f"{host}.yaml", {
        "state_dir": str(tmp / host / "state"), "hub": {"url": hub_url, "retries": 1},
        "sync": {"fsync": False},
        "datasets": [{"name": n, "local_dir": str(tmp / host / "data" / n)}
                     for n in ("alpha", "beta")],
        "fleet": {"host": host, **fleet}})


def fleet_json(hub: Hub, at: str | None = None) -> dict[str, Any]:
    url = hub.url + "/api/v1/fleet" + (f"?at={quote(at)}" if at else "")
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def by_host(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in doc["hosts"]}


@pytest.fixture(scope="module")
def six(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """h1-h3 hold today's versions; h4 held yesterday's and its sync today was killed; h5
    synced yesterday only; h6 never ran (expected)."""
    tmp = tmp_path_factory.mktemp("fleet")
    data = tmp / "hubdata"
    make_dataset(data / "alpha", files=4, seed=1)
    make_dataset(data / "beta", files=3, seed=2)
    hub = Hub(tmp, data, debounce=0.3, config_extra={"fleet": {
        "expected_hosts": ["h1", "h2", "h3", "h4", "h5", "h6"]}}).start()
    configs = {h: host_config(tmp, hub.url, h) for h in ("h1", "h2", "h3", "h4", "h5", "h6")}
    first = hub.wait_ready("alpha")
    hub.wait_ready("beta")
    for host in ("h4", "h5"):
        run_cli(["datasets", "sync"], config=configs[host])  # yesterday's versions
    _touch_all(data / "alpha", ROW)
    wait_until(lambda: hub.datasets()["alpha"]["version"] != first["version"],
               "today's version of alpha", timeout=120)
    for host in ("h1", "h2", "h3"):
        run_cli(["datasets", "sync"], config=configs[host])
    killed_at("download.chunk_written:1", ["datasets", "sync"], config=configs["h4"])
    yield tmp, hub, configs
    hub.stop()


def test_the_json_says_exactly_which_host_is_not_ready(six: Any) -> None:
    tmp, hub, configs = six
    today = dt.datetime.now().astimezone()
    early = today.replace(hour=8, minute=0, second=0, microsecond=0).isoformat()
    hosts = by_host(fleet_json(hub, at=early))
    assert {h: hosts[h]["colour"] for h in hosts} == {
        "h1": "green", "h2": "green", "h3": "green", "h4": "amber", "h5": "amber",
        "h6": "red"}
    assert hosts["h4"]["state"] == "waiting" and "alpha" in hosts["h4"]["reasons"][0]
    assert "beta" not in hosts["h4"]["reasons"][0]  # beta did not change: it holds it
    assert hosts["h6"]["state"] == "silent" and hosts["h6"]["reasons"] == ["never reported"]
    late = today.replace(hour=9, minute=30, second=0, microsecond=0).isoformat()
    hosts = by_host(fleet_json(hub, at=late))  # the deadline passed: the rows turn red
    assert hosts["h4"]["state"] == hosts["h5"]["state"] == "late"
    assert [hosts[h]["colour"] for h in ("h1", "h4", "h5", "h6")] == ["green", "red", "red",
                                                                      "red"]
    alpha = next(d for d in hosts["h1"]["datasets"] if d["name"] == "alpha")
    assert alpha["holds"] and alpha["installed"] == hub.datasets()["alpha"]["last_updated"]


def test_the_cli_and_the_gauges_agree(six: Any) -> None:
    tmp, hub, configs = six
    late = dt.datetime.now().astimezone().replace(hour=9, minute=30).isoformat()
    result = run_cli(["--json", "fleet", "status", "--at", late], config=configs["h1"],
                     expect=1)
    states = {h["host"]: h["state"] for h in result.json()["hosts"]}
    assert states == {"h1": "ready", "h2": "ready", "h3": "ready", "h4": "late",
                      "h5": "late", "h6": "silent"}
    text = run_cli(["fleet", "status"], config=configs["h1"], expect=1).out
    assert "h6" in text and "never reported" in text
    with urllib.request.urlopen(hub.url + "/metrics", timeout=30) as response:
        metrics = response.read().decode()
    assert 'datahubsync_fleet_host_ready{host="h1"} 1' in metrics
    assert 'datahubsync_fleet_host_silent{host="h6"} 1' in metrics
    assert 'datahubsync_fleet_dataset_version_lag{host="h4",dataset="alpha"} 1' in metrics
    assert 'datahubsync_fleet_dataset_version_lag{host="h4",dataset="beta"} 0' in metrics
    assert 'datahubsync_fleet_dataset_version_lag{host="h2",dataset="alpha"} 0' in metrics


def test_all_ready_exits_0(tmp_path: Path) -> None:
    make_dataset(tmp_path / "hubdata" / "alpha", files=2)
    make_dataset(tmp_path / "hubdata" / "beta", files=2, seed=4)
    hub = Hub(tmp_path, tmp_path / "hubdata").start()
    try:
        hub.wait_ready("alpha")
        hub.wait_ready("beta")
        cfg = host_config(tmp_path, hub.url, "solo")
        run_cli(["datasets", "sync"], config=cfg)
        assert run_cli(["fleet", "status"], config=cfg).code == 0
    finally:
        hub.stop()
    assert run_cli(["fleet", "status"], config=cfg, expect=75).err  # the hub is gone


def test_a_report_that_cannot_be_delivered_is_kept_and_sent_with_the_next(
        tmp_path: Path) -> None:
    from tests.helpers import free_port

    make_dataset(tmp_path / "hubdata" / "alpha", files=2)
    make_dataset(tmp_path / "hubdata" / "beta", files=2, seed=4)
    hub = Hub(tmp_path, tmp_path / "hubdata").start()
    try:
        hub.wait_ready("beta")
        dead = f"http://127.0.0.1:{free_port()}"
        cfg = host_config(tmp_path, hub.url, "h7", report_url=dead)
        result = run_cli(["datasets", "sync"], config=cfg)  # the sync itself is fine
        assert "fleet report not delivered" in result.err and result.code == 0
        outbox = tmp_path / "h7" / "state" / "fleet-outbox.json"
        assert len(json.loads(outbox.read_text())) == 1
        cfg = host_config(tmp_path, hub.url, "h7")
        run_cli(["datasets", "sync"], config=cfg)
        assert json.loads(outbox.read_text()) == []
        runs = [h for h in fleet_json(hub)["hosts"] if h["host"] == "h7"]
        assert runs and runs[0]["state"] == "ready"
        history = urllib.request.urlopen(hub.url + "/fleet/host/h7", timeout=30).read()
        assert history.count(b"datasets sync") >= 2  # both runs arrived
    finally:
        hub.stop()


def test_the_existing_hub_without_the_route_keeps_working_quietly(tmp_path: Path) -> None:
    from tests.legacy_hub import legacy_hub, zip_tree

    with legacy_hub() as old:
        old.set_package("alpha", zip_tree({"a.csv": b"1,2\r\n"}), "2026-11-30T15:00:00")
        cfg = write_yaml(tmp_path / "c.yaml", {
            "state_dir": str(tmp_path / "s"), "hub": {"url": old.url}, "sync": {"fsync": False},
            "datasets": [{"name": "alpha", "local_dir": str(tmp_path / "alpha")}]})
        result = run_cli(["datasets", "sync"], config=cfg)
    assert result.code == 0 and "fleet" not in result.err.lower()
    assert not (tmp_path / "s" / "fleet-outbox.json").exists() or json.loads(
        (tmp_path / "s" / "fleet-outbox.json").read_text()) == []


def test_metrics_file_for_node_exporter(tmp_path: Path) -> None:
    prom = tmp_path / "textfile" / "datahubsync.prom"
    cfg = write_yaml(tmp_path / "c.yaml", {
        "state_dir": str(tmp_path / "s"), "hub": {"url": "http://127.0.0.1:9", "retries": 1},
        "datasets": [{"name": "alpha", "local_dir": str(tmp_path / "alpha")}],
        "fleet": {"report": False}})
    run_cli(["datasets", "sync", "--metrics-file", str(prom)], config=cfg, expect=75)
    text = prom.read_text()
    assert 'datahubsync_last_run_exit_code{command="datasets sync"} 75' in text
    assert "datahubsync_last_success_timestamp_seconds{" not in text  # it never succeeded
    assert oct(prom.stat().st_mode & 0o777) == "0o644"
    logs = write_yaml(tmp_path / "l.yaml", {"state_dir": str(tmp_path / "s2"), "logs": {
        "log_dir": str(tmp_path), "api_endpoint": "http://127.0.0.1:9/x", "api_key": "k"},
        "fleet": {"report": False, "metrics_file": str(prom)}})
    run_cli(["logs", "once"], config=logs, expect=None)
    text = prom.read_text()  # both commands' series in one file
    assert 'command="datasets sync"' in text and 'command="logs once"' in text
    assert not list(prom.parent.glob(".*.tmp"))
    assert os.access(prom, os.R_OK)


CHROMIUM = "/usr/bin/chromium"


def browser() -> Any:
    """Debian's chromium through Playwright (never Playwright's own download)."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing (make test installs chromium)")
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def test_the_page_in_a_real_browser_on_a_phone(six: Any) -> None:
    tmp, hub, _configs = six
    with browser() as pw:
        chrome = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = chrome.new_page(viewport={"width": 390, "height": 844})
            late = dt.datetime.now().astimezone().replace(hour=9, minute=30).isoformat()
            page.goto(f"{hub.url}/fleet?at={quote(late)}")
            rows = page.locator("#hosts tbody tr")
            assert rows.count() == 6
            states = {rows.nth(i).get_attribute("data-host"): rows.nth(i).get_attribute(
                "data-state") for i in range(6)}
            assert states == {"h1": "ready", "h2": "ready", "h3": "ready", "h4": "late",
                              "h5": "late", "h6": "silent"}
            colour = page.locator('tr[data-host="h6"] td.state').evaluate(
                "e => getComputedStyle(e).backgroundColor")
            ok = page.locator('tr[data-host="h1"] td.state').evaluate(
                "e => getComputedStyle(e).backgroundColor")
            assert colour == "rgb(251, 213, 213)" and ok == "rgb(216, 243, 220)"
            assert page.locator("#count-red").inner_text().startswith("3")
            assert page.locator("#packages tbody tr").count() == 2
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390 + 2, f"the page is {width}px wide on a 390px phone"
            page.screenshot(path=str(tmp / "fleet-phone.png"), full_page=True)
            page.locator('a:text("h1")').click()
            page.wait_for_selector("#chart-duration")
            assert page.locator("#chart-duration rect.bar").count() >= 1
            assert page.locator("#chart-start rect.bar").count() >= 1
            assert page.locator("#runs tbody tr").count() >= 1
            page.set_viewport_size({"width": 1280, "height": 800})
            page.screenshot(path=str(tmp / "fleet-host.png"), full_page=True)
            refresh = page.locator('meta[http-equiv="refresh"]').get_attribute("content")
            assert int(refresh) > 0
            external = page.evaluate("[...document.querySelectorAll('[src],[href]')]"
                                     ".map(e => e.src || e.href)"
                                     ".filter(u => u && !u.startsWith(location.origin))")
            assert external == []  # no CDN: the servers may have no internet
        finally:
            chrome.close()
    assert (tmp / "fleet-phone.png").stat().st_size > 1000
