"""Fuzz target: the request bodies ``serve`` accepts from peers: the IP ingest batch and
the picture push, parsed the one way every route parses them (core.jsonsafe).

Contract: any bytes give rows/a task, or BadJson / the route's Invalid (both
400 with a message); what is accepted encodes as UTF-8 and holds no NUL, so no
store can fail on it later (a 500, or a queue stuck behind one batch).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from datahubsync.core.jsonsafe import BadJson, parse_json
    from datahubsync.logs import ingest
    from datahubsync.pictures import push_routes


def _clean(value: object) -> None:
    if isinstance(value, str):
        value.encode("utf-8")
        assert "\0" not in value, value
    elif isinstance(value, (list, tuple)):
        for item in value:
            _clean(item)


def test_one_input(data: bytes) -> None:
    try:
        body = parse_json(data)
    except BadJson:
        return
    try:
        rows = ingest.validate(body, 10_000, "127.0.0.1")
    except ingest.Invalid:
        pass
    else:
        for row in rows:
            _clean(row)
    try:
        task = push_routes.validate(body)
    except push_routes.Invalid:
        pass
    else:
        _clean([task.task_id, task.camera_id, task.created_time, *task.images])


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
