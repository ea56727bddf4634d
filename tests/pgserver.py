"""A PostgreSQL for the tests: the configured server, else a throwaway one.

``DATAHUBSYNC_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
names the server. When it is unreachable: under ``CI=true`` the tests fail
(CI must not silently test less); elsewhere a throwaway cluster is started
with ``initdb``/``pg_ctl`` when the binaries exist, else the tests skip with
the reason.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

PG_URL_ENV = "DATAHUBSYNC_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def reachable(url: str) -> str | None:
    """None when we can connect, else why not."""
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
        return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None




def _throwaway(base: Path) -> tuple[str, list[str]]:
    """initdb + pg_ctl start on a free port; returns the URL and the stop command."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise FileNotFoundError("no initdb/pg_ctl on this machine")
    data = base / "pgdata"
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        user = "postgres" if _user_exists("postgres") else "nobody"
        shutil.chown(base, user)
        prefix = ["runuser", "-u", user, "--"]
    port = free_port()
    subprocess.run(prefix + [initdb, "-D", str(data), "-U", "postgres", "--auth=trust",
                             "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run(prefix + [pg_ctl, "-D", str(data), "-w", "-l", str(base / "log"), "-o",
                             f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start"],
                   check=True, capture_output=True)
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE test")
    return url.rsplit("/", 1)[0] + "/test", prefix + [pg_ctl, "-D", str(data), "-m",
                                                       "immediate", "stop"]


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A libpq URL of a PostgreSQL the test may create tables in."""
    url = os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)
    problem = reachable(url)
    if problem is None:
        yield url
        return
    if in_ci():
        pytest.fail(f"PostgreSQL at {url} is unreachable ({problem}); CI=true requires it")
    # Not under pytest's tmp dir: that is 0700 root, and the server runs as another user.
    base = Path(tempfile.mkdtemp(prefix="datahubsync-test-pg-"))
    try:
        url, stop = _throwaway(base)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"PostgreSQL at {url} is unreachable ({problem}) and no throwaway "
                    f"server could be started ({exc})")
    try:
        yield url
    finally:
        subprocess.run(stop, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_table(pg_url: str) -> Iterator[str]:
    """A unique table name; the table (if the test made it) is dropped afterwards."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
