"""Range and If-Range as RFC 9110 says, before aiohttp's FileResponse sees them.

aiohttp serves ``bytes=-0`` as the whole file with 206, answers some invalid
forms with 416 and knows only the date form of If-Range. The rules here:

- one well-formed ``bytes=a-b`` / ``a-`` / ``-n`` range is served as asked
  (206, or 416 when it starts past the end, as aiohttp does);
- ``bytes=-0`` can match nothing: 416;
- a syntactically invalid Range, another unit, or several ranges: the whole
  file (200), which RFC 9110 allows a server to send for any Range;
- If-Range: an entity tag must equal the file's strong ETag, a date must be a
  valid HTTP date (aiohttp compares it with Last-Modified); anything else,
  and a weak tag, means the whole file.

``normalise`` returns the request to hand to FileResponse: unchanged, without
Range (whole file), or with a Range that aiohttp answers with 416.
"""

from __future__ import annotations

import email.utils
import re
from typing import Any

from aiohttp import hdrs

_ONE_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")
_UNSATISFIABLE = "bytes=999999999999999999-"


def verdict(range_header: str | None, if_range: str | None, etag: str | None) -> str:
    """``"as-asked"``, ``"whole"`` or ``"unsatisfiable"`` for these request headers."""
    if range_header is None:
        return "as-asked"
    # optional whitespace is SP and HTAB only (str.strip would also drop \x1c-\x1f)
    value = range_header.strip(" \t")
    match = _ONE_RANGE.match(value)
    if match is None or match.end() != len(value):
        return "whole"
    first, last = match.groups()
    if not first and not last:
        return "whole"
    if first and last and int(last) < int(first):
        return "whole"
    if not first and int(last) == 0:
        return "unsatisfiable"
    if if_range is not None and not _if_range_holds(if_range.strip(" \t"), etag):
        return "whole"
    return "as-asked"


def _if_range_holds(value: str, etag: str | None) -> bool:
    if value.startswith(('"', "W/")):
        return etag is not None and value == f'"{etag}"'
    try:
        return email.utils.parsedate_to_datetime(value) is not None
    except (TypeError, ValueError, IndexError, OverflowError):  # a year of 10**20
        return False


def normalise(request: Any, etag: str | None) -> Any:
    """``request`` as FileResponse should see it (see the module docstring)."""
    decided = verdict(request.headers.get(hdrs.RANGE), request.headers.get(hdrs.IF_RANGE), etag)
    if decided == "as-asked":
        return request
    headers = request.headers.copy()
    headers.popall(hdrs.RANGE, None)
    headers.popall(hdrs.IF_RANGE, None)
    if decided == "unsatisfiable":
        headers[hdrs.RANGE] = _UNSATISFIABLE
    return request.clone(headers=headers)
