"""The fleet feature's config: the hub's keys under ``fleet:`` (the report store, when a
host counts as ready, silent or late, and the alerts). The client's keys of the same
section (report, report_url, metrics_file, ...) are core's: every command reports."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from datahubsync.core.config import PART, Section, check_networks, http_url
from datahubsync.core.db import check_store_url


class SmtpConfig(Section):
    """Mail for alerts: plain SMTP, STARTTLS unless told not to, auth from the environment."""

    host: str
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    password_env: str = "DATAHUBSYNC_SMTP_PASSWORD"  # the variable holding the password
    sender: str = "datahubsync@localhost"
    to: list[str] = Field(min_length=1)
    timeout: float = Field(10, gt=0)


class WebhookConfig(Section):
    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        return http_url(value) or value


ALERT_RULES = ("dataset_late", "sync_failed", "host_silent", "pictures_given_up",
               "logs_severe", "batch_failed")


class AlertsConfig(Section):
    """Alerts without Prometheus: a message when a condition starts and one when it
    clears, to every webhook (JSON POST, retried with backoff) and mail recipient."""

    rules: list[Literal["dataset_late", "sync_failed", "host_silent", "pictures_given_up",
                        "logs_severe", "batch_failed"]] = Field(
        default_factory=lambda: list(ALERT_RULES))
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    smtp: SmtpConfig | None = None
    min_interval: float = Field(3600, ge=0)  # seconds before the same alert is sent again
    check_interval: float = Field(60, gt=0)  # seconds between evaluations
    retries: int = Field(5, ge=1)


class FleetHubKeys(Section):
    """``fleet:`` keys of the hub: its report store and its view of the fleet."""

    model_config = PART

    store_url: str | None = None  # postgresql://...; null = SQLite in {state_dir}/serve
    retention_days: int = Field(30, ge=1)
    ready_by: str = Field("09:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")  # hub's zone
    silent_after: float = Field(93600, gt=0)  # seconds without a report: the host is silent
    expected_hosts: list[str] = Field(default_factory=list)  # shown red until they report
    # who may read the page and /api/v1/fleet without a token (the report route follows
    # serve.trusted_networks): loopback and the private ranges by default
    view_networks: list[str] = Field(default_factory=lambda: [
        "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
        "fc00::/7"])
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)

    @field_validator("view_networks")
    @classmethod
    def _view_networks(cls, value: list[str]) -> list[str]:
        return check_networks(value) or []

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str | None) -> str | None:
        return check_store_url(value, ("postgresql", "postgres"))
