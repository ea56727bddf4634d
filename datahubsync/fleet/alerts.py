"""Alerts without Prometheus: the fleet's conditions to webhooks and mail.

Each condition (``dataset_late``, ``sync_failed``, ``host_silent``,
``pictures_given_up``, ``logs_severe``, ``batch_failed``, per host) gets one
message when it starts (``firing``) and one when it clears (``resolved``);
a condition that comes back within ``fleet.alerts.min_interval`` is not
announced again until that interval has passed (no flood from a flapping
host). Webhooks get a JSON POST ``{"status", "rule", "host", "summary",
"since"}``, retried with backoff; mail goes over SMTP with STARTTLS, the
password read from the environment variable ``smtp.password_env``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import smtplib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from datahubsync.core.errors import describe_error
from datahubsync.core.http import RetryPolicy, call_with_retry, make_session
from datahubsync.core.reportstore import ReportStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    status: str  # firing | resolved | test
    rule: str
    host: str
    summary: str
    since: float

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "rule": self.rule, "host": self.host,
                "summary": self.summary,
                "since": dt.datetime.fromtimestamp(self.since).astimezone()
                .isoformat(timespec="seconds")}

    @property
    def subject(self) -> str:
        word = {"firing": "ALERT", "resolved": "resolved", "test": "test"}[self.status]
        return f"[datahubsync {word}] {self.rule} {self.host}".strip()


def _webhook(url: str, headers: Mapping[str, str], alert: Alert, retries: int,
             sleep: Callable[[float], None]) -> None:
    import requests

    def once() -> None:
        with make_session() as session:
            response = session.post(url, json=alert.to_json(), headers=dict(headers),
                                    timeout=(5, 10))
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise requests.ConnectionError(f"HTTP {response.status_code}")
        response.raise_for_status()

    call_with_retry(once, RetryPolicy(attempts=retries, initial=1.0, maximum=30.0,
                                      sleep=sleep))


def _mail(cfg: Any, alert: Alert) -> None:
    message = EmailMessage()
    message["Subject"] = alert.subject
    message["From"] = cfg.sender
    message["To"] = ", ".join(cfg.to)
    body = alert.to_json()
    message.set_content("\n".join(f"{k}: {v}" for k, v in body.items()) + "\n")
    with smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout) as smtp:
        if cfg.starttls:
            smtp.starttls()
        if cfg.username:
            smtp.login(cfg.username, os.environ.get(cfg.password_env, ""))
        smtp.send_message(message)


def send(cfg: Any, alert: Alert, sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Send ``alert`` through every configured channel; returns one line per failure."""
    problems: list[str] = []
    for hook in cfg.webhooks:
        try:
            _webhook(hook.url, hook.headers, alert, cfg.retries, sleep)
        except Exception as exc:  # noqa: BLE001 - one channel failing never stops the others
            problems.append(f"webhook {hook.url.split('?')[0]}: {describe_error(exc)}")
    if cfg.smtp is not None:
        try:
            _mail(cfg.smtp, alert)
        except (OSError, smtplib.SMTPException) as exc:
            problems.append(f"mail via {cfg.smtp.host}:{cfg.smtp.port}: {exc}")
    for problem in problems:
        log.warning("alert %s %s not delivered: %s", alert.rule, alert.host, problem)
    return problems


def evaluate(store: ReportStore, found: Mapping[str, str], cfg: Any, now: float,
             sleep: Callable[[float], None] = time.sleep) -> list[Alert]:
    """Compare the conditions that hold now with what was announced; send what changed."""
    sent: list[Alert] = []
    enabled = set(cfg.rules)
    keys: Iterable[str] = set(found) | set(store.active_keys())
    for key in sorted(keys):
        rule, _, host = key.partition("|")
        if rule not in enabled:
            continue
        active = key in found
        summary = found.get(key, f"{host}: {rule} cleared")
        status = store.flip(key, active, summary, now, cfg.min_interval)
        if status is None:
            continue
        alert = Alert(status, rule, host, summary, now)
        send(cfg, alert, sleep)
        sent.append(alert)
    return sent
