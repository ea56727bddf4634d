"""Send queued records in batches; a batch leaves the queue only after a 2xx.

The payload is the existing ingest service's: ``{"botnet_type", "source_ip",
"ip_data": [{"ip", "timestamp", "timestamp_source", "date", "log_hour",
"botnet_type", "raw_line_prefix"}]}`` with ``X-API-Key``; each batch carries an
``Idempotency-Key`` that is stored with it, so the batch re-sent after a
crash or a lost answer has the same key and the server stores it once.
401/403 stop the run at once with a clear message (exit 2): retrying a wrong
key or a refused source only hammers the server. Timeouts, connection errors
and 5xx are retried with backoff; when the retries run out the records stay
queued for the next pass.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from datahubsync.core.crashpoint import CrashPoint
from datahubsync.core.errors import ConfigError, TempFailError, describe_error
from datahubsync.core.http import (
    RetryableStatus,
    RetryPolicy,
    call_with_retry,
    raise_for_retryable,
)
from datahubsync.logs.queue import LogQueue

log = logging.getLogger(__name__)

BATCH_CLAIMED = CrashPoint("logs.batch_claimed", "a batch and its idempotency key recorded, "
                           "not sent")
BATCH_ACKED = CrashPoint("logs.batch_acked", "the server acknowledged a batch, still queued")
BATCH_DELETED = CrashPoint("logs.batch_deleted", "an acknowledged batch left the queue")


class RefusedError(ConfigError):
    """The server refused our key (401) or our address (403): fix the config (exit 2)."""


@dataclass
class Sent:
    batches: int = 0
    records: int = 0


def detect_source_ip(endpoint: str) -> str:
    """The local address this host uses to reach the endpoint (no packet is sent)."""
    parts = urlsplit(endpoint)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, socket.AF_INET)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            return str(sock.getsockname()[0])
    except OSError:
        return "127.0.0.1"


class Uploader:
    def __init__(self, cfg: Any, session: requests.Session,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not cfg.api_endpoint:
            raise ConfigError("logs.api_endpoint: required to upload")
        if not cfg.api_key:
            raise ConfigError("logs.api_key: required (set DATAHUBSYNC_LOGS__API_KEY)")
        self.cfg, self.session = cfg, session
        self.source_ip = cfg.source_ip or detect_source_ip(cfg.api_endpoint)
        self.policy = RetryPolicy(attempts=cfg.max_retries + 1, initial=cfg.retry_delay,
                                  maximum=max(cfg.retry_delay * 8, 1.0), sleep=sleep)

    def payload(self, texts: list[str]) -> bytes:
        """The request body: the queued records (JSON texts) spliced in as they are.

        Decoding 500 queued records only to encode them again cost more than
        reading the log lines they came from.
        """
        head = json.dumps({"botnet_type": self.cfg.botnet_type, "source_ip": self.source_ip},
                          ensure_ascii=False)
        return f'{head[:-1]}, "ip_data": [{",".join(texts)}]}}'.encode()

    def post(self, body: bytes, key: str | None) -> dict[str, Any]:
        headers = {"X-API-Key": self.cfg.api_key, "Content-Type": "application/json"}
        if key:
            headers["Idempotency-Key"] = key

        def once() -> requests.Response:
            response = self.session.post(self.cfg.api_endpoint, data=body, headers=headers,
                                         timeout=(10, self.cfg.timeout))
            return raise_for_retryable(response)

        try:
            response = call_with_retry(once, self.policy)
        except (requests.RequestException, OSError) as exc:
            raise TempFailError(f"{self.cfg.api_endpoint} unreachable: "
                                f"{describe_error(exc)}; records stay queued") from None
        except RetryableStatus as exc:  # 5xx / 429 until the retries ran out
            raise TempFailError(f"{self.cfg.api_endpoint}: {exc}; records stay queued") from None
        if response.status_code in (401, 403):
            what = "the API key" if response.status_code == 401 else \
                f"this source address ({self.source_ip})"
            raise RefusedError(f"{self.cfg.api_endpoint} refused {what} "
                               f"(HTTP {response.status_code}); check logs.api_key / the "
                               "server's allowed networks — nothing was sent")
        if not 200 <= response.status_code < 300:
            raise TempFailError(f"{self.cfg.api_endpoint} answered HTTP "
                                f"{response.status_code}: {response.text[:200]}")
        try:
            return dict(response.json())
        except ValueError:
            return {}

    def drain(self, queue: LogQueue, minimum: int) -> Sent:
        """Send batches while at least ``minimum`` records are queued (or a batch is in flight)."""
        sent = Sent()
        while True:
            in_flight = queue.db.execute("SELECT 1 FROM batch").fetchone() is not None
            if not in_flight and queue.depth() < max(minimum, 1):
                return sent
            batch = queue.next_batch(self.cfg.batch_size)
            if batch is None:
                return sent
            BATCH_CLAIMED.reached()
            try:
                answer = self.post(self.payload(batch.texts), batch.key)
            except (TempFailError, RefusedError):
                queue.note_upload_failure(time.strftime("%Y-%m-%d"))
                raise
            BATCH_ACKED.reached()
            received = answer.get("received_count")
            if received is not None and received != len(batch):
                log.warning("server stored %s of %d records of batch %s", received,
                            len(batch), batch.key)
            queue.acknowledge(batch, time.strftime("%Y-%m-%d"))
            BATCH_DELETED.reached()
            sent.batches += 1
            sent.records += len(batch)
            log.info("uploaded %d records (batch %s)", len(batch), batch.key)
