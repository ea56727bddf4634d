"""Text from peers, made safe for a terminal and a log file.

Names, versions and messages from a hub, a sender or a log line may hold CR,
LF or escape sequences (OSC 52 writes the clipboard, CSI moves the cursor);
printed raw they forge log lines or drive the operator's terminal. Every
human output and log record passes through ``printable``; JSON output through
``json_printable`` (``json.dumps`` already escapes C0, not C1).
"""

from __future__ import annotations

import re

_CONTROL_KEEP_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_C1 = re.compile(r"[\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def printable(text: str, keep_lines: bool = True) -> str:
    """``text`` with control characters shown as ``\\xNN`` (newlines and tabs kept unless
    ``keep_lines`` is false, for one-line fields such as a log message)."""
    pattern = _CONTROL_KEEP_LINES if keep_lines else _CONTROL_ALL
    return pattern.sub(_escape, text)


def json_printable(text: str) -> str:
    """A ``json.dumps`` result with the C1 controls it leaves raw escaped as ``\\u00NN``."""
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
