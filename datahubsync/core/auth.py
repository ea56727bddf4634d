"""Constant-time checks of API keys and bearer tokens for every protected route.

One helper so that every route compares secrets the same way: ``hmac.compare_digest``
against each configured key (never an early exit on the first mismatching byte,
never a dict lookup keyed by the secret), and never logs what was presented.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping


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
