"""How many CPUs this process may use: the one answer for every "one per CPU" default.

``os.cpu_count()`` counts the machine's CPUs; under a systemd ``CPUAffinity=``,
``taskset`` or a container's cpuset the process may use fewer, and a pool sized
by the machine would only make the CPUs it has take turns.
"""

from __future__ import annotations

import os


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
