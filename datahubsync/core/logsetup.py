"""Logging: stderr always, plus a file opened with WatchedFileHandler.

WatchedFileHandler reopens the file when logrotate moves it, so rotation
needs no copytruncate. Credentials in URLs are masked before any handler
sees a record.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from pathlib import Path

from datahubsync.core.textsafe import printable

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]+:[^/@\s]+@")
_QUERY_SECRET = re.compile(r"(?P<key>[?&;](?:password|passwd|pwd|token|secret|api_key|apikey|"
                           r"access_token|sig|signature)=)[^&;#\s]*", re.IGNORECASE)
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def mask_secrets(text: str) -> str:
    """``user:pass@`` in URLs and ``?password=...`` (and similar keys) in query strings
    replaced by ``***``."""
    return _QUERY_SECRET.sub(r"\g<key>***", _URL_CREDENTIALS.sub(r"\g<scheme>***@", text))


class RedactFilter(logging.Filter):
    """Masks ``user:password@`` in URLs so secrets never reach a log, and shows control
    characters (CR, LF, escape sequences from a peer) as ``\\xNN`` so a record is one line
    that cannot drive a terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = printable(mask_secrets(message), keep_lines=False)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def setup_logging(level: str = "INFO", file: Path | None = None) -> None:
    """Configure the ``datahubsync`` logger tree (idempotent: replaces our handlers)."""
    root = logging.getLogger("datahubsync")
    root.setLevel(level.upper())
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(FORMAT)
    stderr = logging.StreamHandler(sys.stderr)
    handlers: list[logging.Handler] = [stderr]
    if file is not None:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.WatchedFileHandler(file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RedactFilter())
        root.addHandler(handler)
