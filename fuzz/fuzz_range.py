"""Fuzz target: Range / If-Range handling (core.httprange) and what aiohttp then parses.

Contract: ``verdict`` never raises and answers one of its three words; a
request it passes on "as asked" is one aiohttp parses without an error other
than the ValueError it turns into 416.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from aiohttp.test_utils import make_mocked_request

    from datahubsync.core.httprange import normalise, verdict


PREFIXES = ["bytes=", "bytes=-", "bytes=0-", "bytes= ", "Bytes=", "chars=", "", "bytes=1-2,"]
IF_RANGES = ['"', 'W/"', "Mon, 01 Dec 2026 ", "Tue, 32 Foo 2026 25:61:61 GMT", ""]


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    range_header = fdp.PickValueInList(PREFIXES) + fdp.ConsumeUnicodeNoSurrogates(
        fdp.ConsumeIntInRange(0, 40))
    if_range = fdp.PickValueInList(IF_RANGES) + fdp.ConsumeUnicodeNoSurrogates(
        fdp.ConsumeIntInRange(0, 30)) if fdp.ConsumeBool() else None
    etag = fdp.ConsumeUnicodeNoSurrogates(12) if fdp.ConsumeBool() else None
    decided = verdict(range_header, if_range, etag)
    assert decided in ("as-asked", "whole", "unsatisfiable"), decided
    if not range_header.isascii() or "\r" in range_header or "\n" in range_header:
        return  # not a header value a client can send
    if if_range is not None and (not if_range.isascii() or "\r" in if_range
                                 or "\n" in if_range):
        return
    # as an HTTP parser hands them over: without leading and trailing SP/HTAB
    headers = {"Range": range_header.strip(" \t")}
    if if_range is not None:
        headers["If-Range"] = if_range.strip(" \t")
    request = normalise(make_mocked_request("GET", "/", headers=headers), etag)
    try:
        request.http_range  # noqa: B018 - the parse is the test
    except ValueError as exc:
        # what we pass on unchanged is a range aiohttp must accept (it answers 416 for a
        # ValueError: a valid range refused); what we rewrite, it must parse too
        raise AssertionError(f"{decided}: aiohttp refuses {headers!r}: {exc}") from None


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
