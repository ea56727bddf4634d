"""IPv4 addresses in sinkhole log lines: strict octets, public addresses only.

The regex runs over whole chunks of bytes (never decoded, never split into
lines first); the enclosing line is looked up only for an address not seen
before, which is the rare case in a sinkhole log. Leading zeros are
normalised (``010.001.002.003`` is ``10.1.2.3``) before ``ipaddress`` judges
the address: private, loopback, link-local, reserved, multicast and other
non-global addresses are dropped.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

IP_RE = re.compile(rb"(?<![0-9.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![0-9]|\.[0-9])")
LINE_TIME = re.compile(rb"^\s*\[?(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})")
FILE_HOUR = re.compile(r"(\d{4}-\d{2}-\d{2})_(\d{2})")


def normalise(octets: tuple[bytes, bytes, bytes, bytes]) -> str | None:
    """``a.b.c.d`` with leading zeros dropped, or None when an octet is over 255."""
    values = [int(o) for o in octets]
    if any(v > 255 for v in values):
        return None
    return ".".join(map(str, values))


@lru_cache(maxsize=65536)
def is_public(ip: str) -> bool:
    address = ipaddress.IPv4Address(ip)
    return address.is_global and not address.is_multicast


def line_around(chunk: bytes, start: int) -> bytes:
    """The line of ``chunk`` that holds offset ``start``."""
    begin = chunk.rfind(b"\n", 0, start) + 1
    end = chunk.find(b"\n", start)
    return chunk[begin:end if end != -1 else len(chunk)].rstrip(b"\r")


def line_time(line: bytes) -> tuple[str, str] | None:
    """(date, HH:MM:SS) at the start of a line, if it has one."""
    found = LINE_TIME.match(line)
    if found is None:
        return None
    return found.group(1).decode(), found.group(2).decode()


def file_hour(name: str) -> tuple[str, int] | None:
    """(date, hour) from a name like ``ramnit_2025-12-09_16.log``."""
    found = FILE_HOUR.search(name)
    if found is None:
        return None
    hour = int(found.group(2))
    return (found.group(1), hour) if hour < 24 else None
