"""How to start this same program again as a child process.

The batch API runs each job as ``datahubsync batch run`` in its own process
(so a server restart neither kills nor forgets it). Frozen, that is the binary
itself; from a virtualenv, ``python -m datahubsync``. We never re-exec the
current process and never touch PATH (the old picture client did, and its PATH grew without
bound).
"""

from __future__ import annotations

import sys


def self_argv() -> list[str]:
    """argv prefix that runs the datahubsync CLI."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    return [sys.executable, "-m", "datahubsync"]
