"""Parsing JSON from a peer we do not trust: one place, one error class, no crash.

``json.loads`` on hostile input fails in ways a caller does not expect:
``RecursionError`` for deep nesting, ``ValueError`` for integers past 4 300
digits, ``UnicodeDecodeError`` for bytes that are not UTF-8, and lone
surrogates (``"\\ud800"``) that parse fine and then fail in whichever
database or encoder sees them first. ``parse_json`` turns each into a
:class:`BadJson` whose message names the problem, so routes answer 400 and
clients fail one item with a clear line.
"""

from __future__ import annotations

import json
import re
from typing import Any

# a \u escape in the surrogate range: only then is the parsed value walked
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class BadJson(ValueError):
    """The bytes are not a JSON document we can use; the message says why."""


def parse_json(data: bytes | str, what: str = "body") -> Any:
    """Decode UTF-8 ``data`` as JSON, or raise :class:`BadJson` naming the problem."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise BadJson(f"{what} is not UTF-8 (byte {exc.start})") from None
    else:
        text = data
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadJson(f"{what} is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise BadJson(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} "
                      f"column {exc.colno})") from None
    except ValueError as exc:  # an integer past sys.get_int_max_str_digits()
        raise BadJson(f"{what} holds a number too large ({str(exc).split(':')[0]})") from None
    if _SURROGATE_ESCAPE.search(text):
        _reject_lone_surrogates(value, what)
    return value


def _reject_lone_surrogates(value: Any, what: str) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadJson(f"{what} holds a lone UTF-16 surrogate ({item[:40]!r})") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
