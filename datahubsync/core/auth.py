"""Constant-time checks of API keys and bearer tokens for every protected route.

One helper so that every route compares secrets the same way: ``hmac.compare_digest``
against each configured key (never an early exit on the first mismatching byte,
never a dict lookup keyed by the secret), and never logs what was presented.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LOOPBACK = ("127.0.0.0/8", "::1/128")


def token_matches(presented: str | None, accepted: Iterable[str]) -> bool:
    """True when ``presented`` equals one of ``accepted`` (compared in constant time)."""
    if not presented:
        return False
    given = presented.encode("utf-8", "surrogateescape")
    found = False
    for key in accepted:
        # Compare against every key so the time does not say which one matched.
        found |= hmac.compare_digest(given, key.encode("utf-8", "surrogateescape"))
    return found


def presented_token(headers: Mapping[str, str]) -> str | None:
    """The secret a request carries: ``X-API-Key``, else ``Authorization: Bearer``."""
    key = headers.get("X-API-Key")
    if key:
        return key
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(items: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def _in(address: str | None, nets: Sequence[Network]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.strip().removeprefix("[").split("]")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in nets)


@dataclass(frozen=True)
class Access:
    """Who may call a route: a token, or (no token needed) a client in ``trusted``.

    The client is the TCP peer, unless the request came through a proxy: with an
    ``X-Forwarded-For`` header, the peer must be one of ``proxies`` and the client
    is the address that proxy appended last; through any other proxy nothing is
    trusted (else every request relayed by a local nginx would look like loopback).
    """

    tokens: tuple[str, ...]
    trusted: tuple[Network, ...] = ()
    proxies: tuple[Network, ...] = ()

    def client(self, request: Any) -> str | None:
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded is None:
            return request.remote
        if not _in(request.remote, self.proxies):
            return None
        return forwarded.split(",")[-1].strip() or None

    def trusted_client(self, request: Any) -> bool:
        return _in(self.client(request), self.trusted)

    def allows(self, request: Any) -> bool:
        """A valid token, or a trusted client."""
        return token_matches(presented_token(request.headers), self.tokens) \
            or self.trusted_client(request)


def access_for(serve: Any) -> Access:
    """The access rule of ``serve``'s API routes, from its config section."""
    return Access(tuple(serve.api_tokens), networks(serve.trusted_networks),
                  networks(serve.trusted_proxies))
