"""Fuzz target: the legacy TCP request frame (4-byte big-endian length + UTF-8 path),
as ``serve`` reads it, then the path mapped onto a picture root.

Contract: a frame is either refused (the error frame) or maps to a path under
the root; nothing raises, nothing escapes the root.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    from datahubsync.pictures.config import LegacyTcpConfig
    from datahubsync.pictures.legacy_tcp import LegacyTcpServer, Refused, base_name
    from datahubsync.pictures.paths import make_roots, map_path

ROOT = tempfile.mkdtemp(prefix="dhs-fuzz-root-")
ROOTS = make_roots([("D:\\pic", ROOT)])
SERVER = LegacyTcpServer(LegacyTcpConfig(read_timeout=1), service=None, shutdown_timeout=1)
LOOP = asyncio.new_event_loop()


async def _read(data: bytes) -> str:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return await SERVER._read_request(reader)  # noqa: SLF001 - the parser under test


def test_one_input(data: bytes) -> None:
    try:
        text = LOOP.run_until_complete(_read(data))
    except Refused:
        return
    base_name(text)
    mapped = map_path(text, ROOTS)
    if mapped is not None:
        local = os.path.normpath(os.fspath(mapped.local))
        assert local == ROOT or local.startswith(ROOT + os.sep), (text, local)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
