"""Every named crash point is killed at by some test, and the mechanism does what it says."""

from __future__ import annotations

import importlib
import os
import signal
import sys

import pytest

from datahubsync.core.crashpoint import ENV, CrashPoint
from tests.crashkit import declared_points, point_name

# Modules whose KILLED_AT lists the points their crash tests kill at.
CRASH_TEST_MODULES = ["tests.test_install_crash", "tests.test_delta", "tests.test_resume",
                      "tests.test_logs_client", "tests.test_pictures_client",
                      "tests.test_pictures_pipeline", "tests.test_batch",
                      "tests.test_hub_crash", "tests.test_pictures_sender",
                      "tests.test_s3"]


def killed_points() -> set[str]:
    found: set[str] = set()
    for name in CRASH_TEST_MODULES:
        found |= {point_name(p) for p in importlib.import_module(name).KILLED_AT}
    return found


def test_every_declared_point_is_killed_at_by_a_test() -> None:
    declared = declared_points()
    assert len(declared) >= 25
    untested = {name: where for name, where in declared.items() if name not in killed_points()}
    assert not untested, f"crash points no test kills at: {untested}"


def test_every_point_a_test_names_exists() -> None:
    assert killed_points() <= set(declared_points())


def _child_reaches(point: CrashPoint, armed: str | None, times: int) -> int:
    """Fork; the child reaches ``point`` ``times`` times. Returns its exit status."""
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        if armed is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = armed
        for _ in range(times):
            point.reached()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize(("armed", "times", "expected"), [
    (None, 3, 0),
    ("test.point", 1, -signal.SIGKILL),
    ("test.point:3", 2, 0),
    ("test.point:3", 3, -signal.SIGKILL),
    ("test.poin", 3, 0),  # a prefix is another point
    ("test.point.more", 3, 0),
    ("other.point", 3, 0),
])
def test_point_fires_only_when_named_and_counted(armed: str | None, times: int,
                                                 expected: int) -> None:
    point = CrashPoint("test.point", "a test step")
    assert _child_reaches(point, armed, times) == expected
