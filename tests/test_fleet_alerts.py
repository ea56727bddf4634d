"""Alerts to a real webhook receiver and a real SMTP server (aiosmtpd): start, dedupe,
clear, flapping, retries while the receiver is down, test-alert, and from a real serve."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from datahubsync.core.reportstore import ReportStore
from datahubsync.fleet.alerts import evaluate
from datahubsync.fleet.config import AlertsConfig
from tests.helpers import Hub, free_port, run_cli, wait_until, write_yaml


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver; answers 503 to the first ``fail`` requests."""

    got: list[dict[str, Any]] = []
    fail = 0
    attempts = 0

    def do_POST(self) -> None:  # noqa: N802
        cls = type(self)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls.attempts += 1
        if cls.fail > 0:
            cls.fail -= 1
            self.send_response(503)
        else:
            cls.got.append({**body, "auth": self.headers.get("Authorization")})
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Receiver.got, Receiver.fail, Receiver.attempts = [], 0, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@pytest.fixture
def smtp() -> Iterator[tuple[int, list[Any]]]:
    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            received.append(envelope)
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port, received
    controller.stop()


def config(webhook: str, smtp_port: int | None = None, **extra: Any) -> AlertsConfig:
    doc: dict[str, Any] = {"webhooks": [{"url": webhook, "headers": {"Authorization": "k"}}],
                           "min_interval": 600, **extra}
    if smtp_port is not None:
        doc["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "starttls": False,
                       "to": ["ops@example"]}
    return AlertsConfig.model_validate(doc)


def test_start_dedupe_clear_and_flapping(tmp_path: Path, webhook: str,
                                         smtp: tuple[int, list[Any]]) -> None:
    port, mails = smtp
    store = ReportStore(f"sqlite:///{tmp_path / 'fleet.db'}")
    cfg = config(webhook, port)
    late = {"dataset_late|h4": "h4: late: alpha"}
    sleep = lambda _s: None  # noqa: E731 - backoff not waited for in tests
    assert [a.status for a in evaluate(store, late, cfg, 1000.0, sleep)] == ["firing"]
    assert [a.status for a in evaluate(store, late, cfg, 1060.0, sleep)] == []  # dedupe
    assert [a.status for a in evaluate(store, {}, cfg, 1120.0, sleep)] == ["resolved"]
    assert [a.status for a in evaluate(store, late, cfg, 1180.0, sleep)] == []  # flapping
    assert [a.status for a in evaluate(store, late, cfg, 1800.0, sleep)] == ["firing"]
    assert [(g["status"], g["rule"], g["host"]) for g in Receiver.got] == [
        ("firing", "dataset_late", "h4"), ("resolved", "dataset_late", "h4"),
        ("firing", "dataset_late", "h4")]
    assert Receiver.got[0]["auth"] == "k" and "late: alpha" in Receiver.got[0]["summary"]
    assert len(mails) == 3
    assert b"ALERT" in mails[0].content and b"h4" in mails[0].content
    assert b"resolved" in mails[1].content
    store.close()


def test_a_rule_switched_off_is_not_sent(tmp_path: Path, webhook: str) -> None:
    store = ReportStore(f"sqlite:///{tmp_path / 'fleet.db'}")
    cfg = config(webhook, rules=["sync_failed"])
    assert evaluate(store, {"host_silent|h6": "h6: never reported"}, cfg, 1.0,
                    lambda _s: None) == []
    assert Receiver.got == []


def test_retried_with_backoff_while_the_receiver_is_down(tmp_path: Path, webhook: str) -> None:
    store = ReportStore(f"sqlite:///{tmp_path / 'fleet.db'}")
    Receiver.fail = 2
    waits: list[float] = []
    sent = evaluate(store, {"sync_failed|h2": "h2: last sync failed"}, config(webhook), 5.0,
                    waits.append)
    assert [a.status for a in sent] == ["firing"]
    assert Receiver.attempts == 3 and len(Receiver.got) == 1
    assert len(waits) == 2 and all(w > 0 for w in waits)  # two backoffs before the third


def test_test_alert_through_every_channel(tmp_path: Path, webhook: str,
                                          smtp: tuple[int, list[Any]]) -> None:
    port, mails = smtp
    cfg = write_yaml(tmp_path / "c.yaml", {"state_dir": str(tmp_path / "s"), "fleet": {
        "alerts": {"webhooks": [{"url": webhook}], "smtp": {
            "host": "127.0.0.1", "port": port, "starttls": False, "to": ["ops@example"]}}}})
    result = run_cli(["fleet", "test-alert"], config=cfg)
    assert "2 channel" in result.out
    assert Receiver.got[0]["status"] == "test" and len(mails) == 1
    broken = write_yaml(tmp_path / "b.yaml", {"state_dir": str(tmp_path / "s"), "fleet": {
        "alerts": {"webhooks": [{"url": f"http://127.0.0.1:{free_port()}/x"}],
                   "retries": 1}}})
    failed = run_cli(["fleet", "test-alert"], config=broken, expect=1)
    assert "webhook" in failed.out and "refused" in failed.out.lower()
    none = write_yaml(tmp_path / "n.yaml", {"state_dir": str(tmp_path / "s")})
    assert "no webhook" in run_cli(["fleet", "test-alert"], config=none, expect=2).err


def test_serve_alerts_on_a_silent_host(tmp_path: Path, webhook: str) -> None:
    (tmp_path / "data").mkdir()
    hub = Hub(tmp_path, tmp_path / "data", config_extra={"fleet": {
        "expected_hosts": ["h6"], "alerts": {"webhooks": [{"url": webhook}],
                                             "check_interval": 0.2}}}).start()
    try:
        wait_until(lambda: Receiver.got, "the alert for the silent host")
        assert (Receiver.got[0]["rule"], Receiver.got[0]["host"]) == ("host_silent", "h6")
    finally:
        hub.stop()
    assert len(Receiver.got) == 1  # checked many times, announced once
