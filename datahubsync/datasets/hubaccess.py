"""How the client reaches its hub: every catalog, package, manifest and delta request
goes through :func:`hub_access`.

``hub.url`` is ``http(s)://...`` (``serve``, the existing hub, a static tree behind
nginx or a CDN, a public bucket's web address) or ``s3://BUCKET/PREFIX`` (a tree
``datasets publish --to`` wrote; requests signed with the ``s3`` section's or the
AWS variables' credentials). Either way the caller gets a plain ``requests``
session and URLs, so ``download.py``'s resume (Range + If-Range with the object's
ETag), its bounds and its checks apply unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from datahubsync.core.config import LoadedConfig
from datahubsync.core.errors import ConfigError
from datahubsync.core.http import make_session


@dataclass(frozen=True)
class HubAccess:
    label: str  # hub.url as configured, for messages
    base: str  # what tree paths are appended to
    s3: Any = None  # (S3Location, S3Settings) for an s3:// hub

    def url(self, path: str) -> str:
        """The URL of a path of the hub's tree (``api/datasets``, ``package/a.zip``)."""
        if self.s3 is not None:
            from urllib.parse import quote

            return f"{self.base}/{quote(path, safe='/-_.~')}"
        return f"{self.base}/{path}"

    def session(self) -> requests.Session:
        if self.s3 is None:
            return make_session()
        from datahubsync.core.s3 import s3_session

        return s3_session(*self.s3)


def hub_access(loaded: LoadedConfig, environ: Mapping[str, str] | None = None) -> HubAccess:
    url = loaded.config.hub.url
    if not url:
        raise ConfigError(f"{loaded.source or '<defaults>'}: hub.url: required to sync")
    if not url.startswith("s3://"):
        return HubAccess(url, url)
    from datahubsync.core.s3 import bucket_url, resolve_settings
    from datahubsync.core.s3url import S3Location

    location = S3Location.parse(url)
    settings = resolve_settings(loaded.config.s3, os.environ if environ is None else environ)
    base = bucket_url(location, settings).rstrip("/")
    if location.prefix:
        base += "/" + location.prefix
    return HubAccess(url, base, (location, settings))
