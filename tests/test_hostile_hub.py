"""A hostile or broken hub cannot fill the client's disk, wipe a dataset, crash the run or
drive the operator's terminal; one bad entry fails only its own dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import client_config, run_cli, tree_bytes
from tests.hostile_hub import catalog, endless, entry, hostile_hub, send, url, zip_of

GOOD = {"sz/600000.csv": b"day,close\r\n2026-11-30,10.1\r\n"}


def sync(tmp: Path, hub_url: str, expect: int, names: tuple[str, ...] = ("bad", "good")
         ) -> tuple[dict[str, Any], str]:
    cfg = client_config(tmp, hub_url, list(names), hub={"retries": 1})
    result = run_cli(["datasets", "sync", "--json"], config=cfg, expect=expect)
    assert "Traceback" not in result.err
    return {d["name"]: d for d in json.loads(result.out)["datasets"]}, result.err


def serve_good(server: Any) -> dict[str, Any]:
    package = zip_of(GOOD)
    server.routes["/package/good.zip"] = send(package, "application/zip")
    return entry("good", package)


def part_size(tmp: Path, name: str = "bad") -> int:
    part = tmp / "clientstate" / "downloads" / f"{name}.zip.part"
    return part.stat().st_size if part.exists() else 0


@pytest.mark.parametrize("length", [None, "126"], ids=["no-content-length", "lying-length"])
def test_endless_body_stops_at_the_announced_size(tmp_path: Path, length: str | None) -> None:
    with hostile_hub() as server:
        server.routes["/package/bad.zip"] = endless(length=length)
        bad = {"name": "bad", "last_updated": "2026-11-30T15:00:00", "file_count": 1,
               "total_size": 10, "package_ready": True, "package_size": 126}
        server.routes["/api/datasets"] = catalog(bad, serve_good(server))
        items, _ = sync(tmp_path, url(server), expect=1)
    assert items["bad"]["status"] == "failed"
    if length is None:  # with a Content-Length of 126 the body simply ends there
        assert "more than the 126 bytes it announced" in items["bad"]["message"]
    assert part_size(tmp_path) <= 126  # nothing past the announced size ever hit the disk
    assert items["good"]["status"] == "installed"
    assert tree_bytes(tmp_path / "local" / "good") == GOOD


def test_endless_body_without_any_announced_size_stops_at_max_total_bytes(
        tmp_path: Path) -> None:
    with hostile_hub() as server:
        server.routes["/package/bad.zip"] = endless()
        server.routes["/api/datasets"] = catalog({"name": "bad", "last_updated": "2026-11-30"})
        cfg = client_config(tmp_path, url(server), ["bad"], hub={"retries": 1},
                            sync={"fsync": False, "max_total_bytes": 3 * 1024 * 1024})
        result = run_cli(["datasets", "sync", "--json"], config=cfg, expect=1)
    (item,) = json.loads(result.out)["datasets"]
    assert "more than the 3145728 bytes" in item["message"]
    assert part_size(tmp_path) == 0  # discarded: it will not get better


def test_bomb_of_small_members_is_refused_as_a_whole(tmp_path: Path) -> None:
    """200 members of 1 MiB zeros (each under the per-member ratio floor) from a hub that
    announced total_size 10: refused, the part discarded, nothing installed."""
    bomb = zip_of({f"z/{n}.csv": b"\0" * (1 << 20) for n in range(200)})
    assert len(bomb) < 400_000
    with hostile_hub() as server:
        server.routes["/package/bad.zip"] = send(bomb, "application/zip")
        legacy = {"name": "bad", "last_updated": "2026-11-30T15:00:00", "file_count": 200,
                  "total_size": 10, "package_ready": True, "package_size": len(bomb)}
        server.routes["/api/datasets"] = catalog(legacy, serve_good(server))
        items, _ = sync(tmp_path, url(server), expect=1)
    assert "expands" in items["bad"]["message"] and "as a whole" in items["bad"]["message"]
    assert not (tmp_path / "local" / "bad").exists()
    assert part_size(tmp_path) == 0
    assert items["good"]["status"] == "installed"


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"file_count": 3}, "holds 1 files, the hub announced 3"),
    ({"total_size": 5}, "the hub announced 5"),
], ids=["file-count", "total-size"])
def test_archive_unlike_the_catalog_of_our_hub_is_refused(tmp_path: Path, overrides: dict,
                                                          expected: str) -> None:
    package = zip_of({"a.csv": b"x" * 100})
    with hostile_hub() as server:
        server.routes["/package/bad.zip"] = send(package, "application/zip")
        server.routes["/api/datasets"] = catalog(entry("bad", package, **overrides),
                                                 serve_good(server))
        items, _ = sync(tmp_path, url(server), expect=1)
    assert expected in items["bad"]["message"], items["bad"]
    assert items["good"]["status"] == "installed"


def test_empty_archive_never_replaces_a_dataset_with_files(tmp_path: Path) -> None:
    full = zip_of(GOOD)
    empty = zip_of({})
    with hostile_hub() as server:
        server.routes["/package/good.zip"] = send(full, "application/zip")
        server.routes["/api/datasets"] = catalog(entry("good", full))
        sync(tmp_path, url(server), expect=0, names=("good",))
        server.routes["/package/good.zip"] = send(empty, "application/zip")
        server.routes["/api/datasets"] = catalog(
            {"name": "good", "last_updated": "2026-12-01T15:00:00", "package_ready": True,
             "package_size": len(empty)})  # the existing hub's shape: no totals checked
        items, _ = sync(tmp_path, url(server), expect=1, names=("good",))
    assert "no file" in items["good"]["message"]
    assert tree_bytes(tmp_path / "local" / "good") == GOOD


@pytest.mark.parametrize(("bad_entry", "expected"), [
    ({"last_updated": 1764486000}, "last_updated: expected an ISO-8601 time string"),
    ({"last_updated": "2099-01-01T00:00:00+08:00"}, "ahead of this host's clock"),
    ({"package_size": "lots"}, "package_size: expected a non-negative integer"),
    ({"sha256": "zz"}, "sha256: expected 64 hexadecimal digits"),
    ({"version": "../../x"}, "version: expected a short token"),
    ({"deltas": [{"from": "v1", "path": "/etc/passwd", "size": 1}]}, "deltas[0]: path"),
], ids=["number-time", "future", "size-text", "sha", "version", "delta-path"])
def test_bad_catalog_entry_fails_only_its_dataset_every_run(tmp_path: Path, bad_entry: dict,
                                                            expected: str) -> None:
    package = zip_of({"a.csv": b"1,2\r\n"})
    with hostile_hub() as server:
        server.routes["/package/bad.zip"] = send(package, "application/zip")
        server.routes["/api/datasets"] = catalog(entry("bad", package, **bad_entry),
                                                 serve_good(server))
        for _run in range(2):  # the next morning too: exit 1, never 70
            items, _ = sync(tmp_path, url(server), expect=1)
            assert items["bad"]["status"] == "failed"
            assert expected in items["bad"]["message"], items["bad"]["message"]
            assert items["good"]["status"] in ("installed", "up_to_date")
    assert not (tmp_path / "local" / "bad").exists()


def test_member_path_2000_directories_deep_fails_its_dataset(tmp_path: Path) -> None:
    deep = zip_of({"/".join(["d"] * 2000) + "/x.csv": b"1"})
    with hostile_hub() as server:
        server.routes["/package/bad.zip"] = send(deep, "application/zip")
        legacy = {"name": "bad", "last_updated": "2026-11-30T15:00:00", "package_ready": True,
                  "package_size": len(deep)}
        server.routes["/api/datasets"] = catalog(legacy, serve_good(server))
        items, _ = sync(tmp_path, url(server), expect=1)
    assert "path components, limit 128" in items["bad"]["message"]
    assert part_size(tmp_path) == 0  # not kept to fail the same way every morning
    assert items["good"]["status"] == "installed"


def test_deeply_nested_catalog_is_a_clear_error(tmp_path: Path) -> None:
    with hostile_hub() as server:
        server.routes["/api/datasets"] = send(b'{"datasets": ' + b"[" * 100_000
                                              + b"]" * 100_000 + b"}")
        cfg = client_config(tmp_path, url(server), ["bad"], hub={"retries": 1})
        result = run_cli(["datasets", "sync"], config=cfg, expect=75)
    assert "nested too deeply" in result.err and "Traceback" not in result.err


def test_html_answer_is_not_a_hub(tmp_path: Path) -> None:
    with hostile_hub() as server:
        server.routes["/api/datasets"] = send(b"<html><body>Login</body></html>", "text/html")
        cfg = client_config(tmp_path, url(server), ["bad"], hub={"retries": 1})
        result = run_cli(["datasets", "sync"], config=cfg, expect=2)
    assert "is not a datahubsync hub" in result.err and "hub.url" in result.err
    assert "unreachable" not in result.err


def test_control_sequences_from_the_hub_reach_no_terminal(tmp_path: Path) -> None:
    evil = "2026-11-30\r\n\x1b]52;c;ZWNobyBwd25lZA==\x07\x9b31m"
    package = zip_of(GOOD)
    with hostile_hub() as server:
        server.routes["/package/good.zip"] = send(package, "application/zip")
        server.routes["/api/datasets"] = catalog(
            {"name": "good", "last_updated": evil, "package_ready": True,
             "package_size": len(package)},
            {"name": "x\x1b[2J\rforged", "last_updated": evil})
        cfg = client_config(tmp_path, url(server), ["good"], hub={"retries": 1})
        for args in (["datasets", "sync"], ["datasets", "list"], ["--json", "datasets", "list"]):
            result = run_cli(args, config=cfg, expect=None)
            for stream in (result.out, result.err):
                assert "\x1b" not in stream and "\x07" not in stream and "\x9b" not in stream
                assert "\r" not in stream


def test_a_trickling_hub_fails_the_minimum_rate_and_keeps_the_part(tmp_path: Path) -> None:
    """A byte every 0.3 s arrives well within hub.timeout; the rate check still ends it."""
    import time as _time

    def trickle(h: Any) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/zip")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(400):  # two minutes at most: the client must give up long before
            h.wfile.write(b"P")
            h.wfile.flush()
            _time.sleep(0.3)

    with hostile_hub() as server:
        server.routes["/package/bad.zip"] = trickle
        server.routes["/api/datasets"] = catalog(
            {"name": "bad", "last_updated": "2026-11-30T15:00:00", "package_ready": True,
             "package_size": 100000})
        cfg = client_config(tmp_path, url(server), ["bad"], hub={"retries": 1},
                            sync={"fsync": False, "min_rate": 1000, "min_rate_window": 2})
        result = run_cli(["datasets", "sync", "--json"], config=cfg, expect=1, timeout=100)
    (item,) = json.loads(result.out)["datasets"]
    assert "under sync.min_rate 1000 B/s" in item["message"], item
    assert 0 < part_size(tmp_path) < 100000  # kept for the next run


def test_deadline_and_max_time_are_on_by_default(tmp_path: Path) -> None:
    import datetime as dt

    from datahubsync.datasets.client import SyncOptions, seconds_left
    from datahubsync.schema import load_config

    cfg = client_config(tmp_path, "http://127.0.0.1:9", ["a"], hub={"timezone": "Asia/Shanghai"})
    loaded = load_config(cfg, environ={})
    assert seconds_left(loaded, SyncOptions()) == 2700  # sync.max_time's default
    cfg = client_config(tmp_path, "http://127.0.0.1:9", ["a"], hub={"timezone": "Asia/Shanghai"},
                        sync={"deadline": "09:00", "max_time": None})
    loaded = load_config(cfg, environ={})
    shanghai = dt.timezone(dt.timedelta(hours=8))
    at_0815 = SyncOptions(now=lambda: dt.datetime(2026, 12, 1, 8, 15, tzinfo=shanghai))
    assert seconds_left(loaded, at_0815) == 45 * 60
    by_hand = SyncOptions(now=lambda: dt.datetime(2026, 12, 1, 14, 0, tzinfo=shanghai))
    assert seconds_left(loaded, by_hand) is None  # past today's deadline: not applied
