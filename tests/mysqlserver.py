"""A MariaDB/MySQL for the tests: ``DATAHUBSYNC_TEST_MYSQL_URL``.

Default ``mysql+pymysql://root@127.0.0.1:3306/test``. When it is unreachable:
under ``CI=true`` the tests fail (CI must not silently test less); elsewhere
they skip with the reason (no throwaway MariaDB is started: ``mariadb-install-db``
needs far more set-up than ``initdb``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.pgserver import in_ci

MYSQL_URL_ENV = "DATAHUBSYNC_TEST_MYSQL_URL"
DEFAULT_MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/test"


def _problem(url: str) -> str | None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return None
    except sa.exc.SQLAlchemyError as exc:
        return str(getattr(exc, "orig", exc)).splitlines()[0]
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """A SQLAlchemy URL of a MariaDB the test may create tables in."""
    url = os.environ.get(MYSQL_URL_ENV, DEFAULT_MYSQL_URL)
    problem = _problem(url)
    if problem is not None:
        if in_ci():
            pytest.fail(f"MariaDB at {url} is unreachable ({problem}); CI=true requires it")
        pytest.skip(f"MariaDB at {url} is unreachable ({problem})")
    return url


@pytest.fixture
def mysql_table(mysql_url: str) -> Iterator[str]:
    """A unique table name; dropped afterwards."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    engine = sa.create_engine(mysql_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()
