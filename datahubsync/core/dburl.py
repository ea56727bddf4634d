"""Database URLs: the SQLAlchemy form users write, the libpq form psycopg takes."""

from __future__ import annotations

from urllib.parse import urlsplit


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://…`` → ``postgresql://…`` (key=value conninfo passes through)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    if scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {scheme}://…")
    return f"postgresql://{rest}"


def redact(url: str) -> str:
    """A URL fit for messages and logs: the password (``user:pass@`` or ``?password=``)
    replaced by ***."""
    from datahubsync.core.logsetup import mask_secrets

    parts = urlsplit(url)
    if parts.password:
        url = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
    return mask_secrets(url)
