"""Fuzz target: the archive checker a client runs on every package and delta it receives.

Contract: for any bytes, opening and checking the archive either passes or
raises IntegrityError / UnsafeArchiveError (the dataset fails with one line);
nothing else escapes. Seeds: small valid zips (``fuzz/run.py`` writes them).
"""

from __future__ import annotations

import io
import sys

import atheris

with atheris.instrument_imports():
    from datahubsync.core.errors import IntegrityError, UnsafeArchiveError
    from datahubsync.datasets.archive import ExtractLimits, check_archive, open_archive

LIMITS = ExtractLimits(max_total_bytes=1 << 30, max_members=10_000, expect_files=None)


def test_one_input(data: bytes) -> None:
    try:
        with open_archive(io.BytesIO(data), "<fuzz>") as zf:
            for info in check_archive(zf, LIMITS):
                assert "\0" not in info.filename
    except (IntegrityError, UnsafeArchiveError):
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
