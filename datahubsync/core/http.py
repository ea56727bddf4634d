"""HTTP client plumbing: one session factory and one retry policy.

Every call has a timeout. Retried: connection errors, timeouts, 5xx, 408 and
429 (honouring Retry-After). Never retried: other 4xx, which a retry cannot
fix. Backoff is exponential with jitter; the sleep function is injectable so
tests run fast.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from datahubsync import __version__
from datahubsync.core.errors import describe_error

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry one network operation."""

    attempts: int = 5
    initial: float = 1.0
    maximum: float = 30.0
    deadline: float | None = None  # seconds for all attempts together
    sleep: Callable[[float], None] = time.sleep


class RetryableStatus(Exception):
    """A response whose status says "try again later"."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"HTTP {response.status_code} from {response.url}")
        self.response = response

    @property
    def retry_after(self) -> float | None:
        value = self.response.headers.get("Retry-After")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)
            if parsed is None:
                return None
            return max(0.0, parsed.timestamp() - time.time())


def make_session(user_agent: str | None = None, pool: int = 4) -> requests.Session:
    """A keep-alive session that does not retry by itself (we do, with tenacity)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool, pool_maxsize=pool, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent or f"datahubsync/{__version__}"
    return session


def is_retryable(exc: BaseException) -> bool:
    """Connection trouble and "try later" statuses are retryable; nothing else is."""
    if isinstance(exc, RetryableStatus):
        return True
    return isinstance(
        exc,
        (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            ConnectionError,
            TimeoutError,
        ),
    )


def raise_for_retryable(response: requests.Response) -> requests.Response:
    """Turn a retryable status into an exception the retry loop understands."""
    if response.status_code in RETRY_STATUSES:
        response.close()
        raise RetryableStatus(response)
    return response


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(initial=policy.initial, max=policy.maximum)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableStatus) and exc.retry_after is not None:
            return min(exc.retry_after, policy.maximum * 10)
        return backoff(state)

    return wait


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    delay = state.next_action.sleep if state.next_action else 0
    log.warning("attempt %d failed (%s); retrying in %.1fs", state.attempt_number, exc, delay)


def call_with_retry(fn: Callable[[], T], policy: RetryPolicy) -> T:
    """Run ``fn`` under ``policy``; the last error is re-raised when it gives up."""
    stop: Any = stop_after_attempt(max(1, policy.attempts))
    if policy.deadline is not None:
        stop = stop | stop_after_delay(policy.deadline)
    retrying = Retrying(
        stop=stop,
        wait=_wait(policy),
        retry=retry_if_exception(is_retryable),
        sleep=policy.sleep,
        before_sleep=_log_retry,
        reraise=True,
    )
    return retrying(fn)


class NotJson(ValueError):
    """A peer answered something other than the JSON document we asked for."""


class BodyTooLarge(ValueError):
    """A response body passed the size we allow for it."""


def read_body(response: requests.Response, limit: int) -> bytes:
    """The whole body of a streamed response, refusing it once it passes ``limit`` bytes
    (whatever Content-Length says, or when there is none)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"{response.url} announces {declared} bytes, more than the "
                           f"{limit} allowed")
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"{response.url} sent more than the {limit} bytes allowed")
    return bytes(body)


def get_json(
    session: requests.Session, url: str, timeout: float | tuple[float, float], policy: RetryPolicy,
    max_bytes: int = 16 * 1024 * 1024,
) -> Any:
    """GET ``url`` and decode JSON, with retries; non-retryable statuses raise HTTPError.

    The body is read up to ``max_bytes``; an HTML page (a proxy, a login portal, a
    web server that is not ours) raises NotJson, a bad document BadJson (both
    ValueError), each with a message that says what came back.
    """
    from datahubsync.core.jsonsafe import parse_json

    def once() -> Any:
        response = raise_for_retryable(session.get(url, timeout=timeout, stream=True))
        with response:
            response.raise_for_status()
            kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            body = read_body(response, max_bytes)
        if kind in ("text/html", "application/xhtml+xml") or body.lstrip()[:1] == b"<":
            raise NotJson(f"{url} answered {kind or 'markup'}, not JSON")
        return parse_json(body, f"the answer of {url}")

    return call_with_retry(once, policy)


def post_json(session: requests.Session, url: str, body: Any, *,
              headers: dict[str, str] | None = None,
              timeout: float | tuple[float, float] = (10, 60)) -> str | None:
    """POST ``body`` as JSON once; None on a 2xx, else one line saying what went wrong.

    For steps that are retried by their own schedule (a ledger's ``retry_after``),
    not by a retry loop here; the error never shows header values (they hold tokens).
    """
    try:
        response = session.post(url, json=body, headers=headers or {}, timeout=timeout)
    except requests.RequestException as exc:
        return describe_error(exc)
    with response:
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code} from {url.split('?')[0]}"


def probe(url: str, timeout: float = 5.0) -> tuple[int | None, str]:
    """One GET for a health check: (status or None, a line saying what came back)."""
    try:
        with make_session() as session, session.get(url, timeout=(timeout, timeout),
                                                     stream=True) as response:
            return response.status_code, f"{url}: HTTP {response.status_code}"
    except requests.RequestException as exc:
        return None, f"{url}: {describe_error(exc)}"
