"""Which database drivers this build can load (``datahubsync version --verbose``).

SQLAlchemy picks dialect and driver modules from a URL at run time, which a
frozen binary only has if they were collected at build time. This loads each
one we support, compiles a paged query with it (Oracle: ``FETCH FIRST``), and
reports oracledb's mode, so a build that lost one is caught by its smoke test,
not on a server. Nothing connects anywhere.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from typing import Any

URLS = {
    "postgresql": "postgresql+psycopg://user@localhost/db",
    "mysql": "mysql+pymysql://user@localhost/db",
    "oracle": "oracle+oracledb://user:pw@localhost:1521/?service_name=XE",
    "sqlite": "sqlite://",
}
PACKAGES = ("aiohttp", "click", "pydantic", "requests", "sqlalchemy", "psycopg", "pymysql",
            "oracledb", "certifi", "zlib-ng", "isal", "httptools")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_drivers() -> dict[str, Any]:
    """Per dialect: loaded or the error, and the SQL a paged query compiles to."""
    from sqlalchemy import Column, Integer, MetaData, Table, create_engine, select

    table = Table("t", MetaData(), Column("id", Integer))
    query = select(table).order_by(table.c.id).limit(5)
    found: dict[str, Any] = {}
    for name, url in URLS.items():
        try:
            engine = create_engine(url)
            sql = str(query.compile(dialect=engine.dialect,
                                    compile_kwargs={"literal_binds": True}))
            found[name] = {"ok": True, "driver": engine.dialect.driver,
                           "sql": " ".join(sql.split())}
            engine.dispose()
        except Exception as exc:  # noqa: BLE001 - report every failure, never raise
            found[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    try:
        import psycopg

        found["postgresql"]["implementation"] = psycopg.pq.__impl__  # "binary" when bundled
    except Exception as exc:  # noqa: BLE001
        found["postgresql"]["implementation_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import oracledb

        found["oracle"]["thin_mode"] = oracledb.is_thin_mode()
    except Exception as exc:  # noqa: BLE001
        found["oracle"]["thin_mode_error"] = f"{type(exc).__name__}: {exc}"
    return found


def build_info() -> dict[str, Any]:
    """Python, platform, frozen or not, and the versions of the packages we ship."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "frozen": bool(getattr(sys, "frozen", False)),
        "packages": {name: _version(name) for name in PACKAGES},
    }
