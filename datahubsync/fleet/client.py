"""``datahubsync fleet status``: the hub's fleet view, for monitoring scripts."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from datahubsync.core.config import LoadedConfig
from datahubsync.core.errors import ConfigError, TempFailError, describe_error
from datahubsync.core.http import NotJson, RetryPolicy, get_json, make_session


def fetch_status(loaded: LoadedConfig, at: str | None = None) -> dict[str, Any]:
    """``GET /api/v1/fleet`` of the hub (``fleet.report_url`` or ``hub.url``)."""
    cfg = loaded.config
    base = cfg.fleet.report_url or cfg.hub.url
    if not base:
        raise ConfigError("hub.url (or fleet.report_url): required to ask the hub")
    url = f"{base.rstrip('/')}/api/v1/fleet" + (f"?at={quote(at)}" if at else "")
    with make_session() as session:
        if cfg.fleet.token:
            session.headers["Authorization"] = f"Bearer {cfg.fleet.token}"
        try:
            doc = get_json(session, url, (cfg.hub.connect_timeout, 30), RetryPolicy(attempts=2))
        except requests.HTTPError as exc:
            code = exc.response.status_code
            if code in (401, 403):
                raise ConfigError(f"{url}: HTTP {code}: set fleet.token (a token of the hub's "
                                  "serve.api_tokens) or add this host to fleet.view_networks"
                                  ) from None
            if code == 404:
                raise ConfigError(f"{url}: 404: this hub has no fleet view") from None
            raise TempFailError(f"{url}: HTTP {code}") from None
        except (requests.RequestException, ConnectionError, TimeoutError) as exc:
            raise TempFailError(f"{url} unreachable: {describe_error(exc)}") from None
        except (NotJson, ValueError) as exc:
            raise TempFailError(f"{url}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("hosts"), list):
        raise TempFailError(f"{url}: not a fleet document")
    return doc
