"""``datasets sync`` (a real CLI subprocess) against a fake of the EXISTING hub.

The old hub sends naive local timestamps, no sha256/etag/version, no ETag,
ignores If-Range and answers HEAD with 501 (see ``tests/legacy_hub.py``).
Every hostile archive is served AFTER a good version was installed, and the
whole test directory (minus the client's state dir) must be byte-identical
afterwards: nothing replaced, nothing escaped, no staging dir left behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import stat
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from datahubsync.datasets import client
from datahubsync.schema import load_config
from tests.helpers import Result, client_config, make_dataset, run_cli, tree_bytes
from tests.legacy_hub import LegacyHub, legacy_hub, zip_tree

T0 = "2026-11-23T19:31:54.791098"  # the old hub's shape: naive local time, microseconds
T1 = "2026-11-24T19:32:10.004512"
SMALL_A = {  # small enough for the max_total_bytes=1000 case
    "sz/600000.csv": "交易日期,收盘价\r\n2026-01-02,10.50\r\n".encode("gbk"),
    "沪市/600001.csv": "交易日期,收盘价\r\n2026-01-02,11.25\r\n".encode("gbk"),
}
GOOD_MEMBER = ("sz/600002.csv", b"2026-01-02,12.00\r\n")


@pytest.fixture
def lhub() -> Iterator[LegacyHub]:
    with legacy_hub() as hub:
        yield hub


# -- helpers ----------------------------------------------------------------------------------

def sync(config: Path, *args: str, expect: int | None = 0,
         env: dict[str, str] | None = None) -> tuple[Result, dict[str, dict[str, Any]]]:
    result = run_cli(["datasets", "sync", "--json", *args], config=config, expect=expect, env=env)
    document = json.loads(result.out)
    return result, {d["name"]: d for d in document["datasets"]}


def state_dir(tmp: Path) -> Path:
    return tmp / "clientstate"


def last_sync_path(tmp: Path) -> Path:
    return state_dir(tmp) / ".last_sync.json"


def local(tmp: Path, name: str = "alpha") -> Path:
    return tmp / "local" / name


def staging_dirs(tmp: Path) -> list[Path]:
    return sorted((tmp / "local").glob(".*.dhs-new-*"))


def snapshot(root: Path, skip: Path) -> dict[str, Any]:
    """Every path under ``root`` (not under ``skip``): file bytes, link target or mode."""
    found: dict[str, Any] = {}
    for base, dirs, files in os.walk(root):
        if Path(base) == skip:
            dirs[:] = []
            continue
        for name in dirs + files:
            path = Path(base, name)
            if path == skip:
                continue
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("symlink", os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                found[rel] = path.read_bytes()
            else:
                found[rel] = ("mode", stat.S_IFMT(st.st_mode))
    return found


def info(name: str, mode: int | None = None, create_system: int = 3) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=(2026, 11, 23, 19, 31, 54))
    zi.create_system = create_system  # 3 = Unix, 0 = MS-DOS/Windows (the old hub's zipfile)
    zi.compress_type = zipfile.ZIP_DEFLATED
    zi.external_attr = ((mode if mode is not None else stat.S_IFREG | 0o644) << 16)
    return zi


def make_zip(members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name if isinstance(name, zipfile.ZipInfo) else info(name), data)
    return buffer.getvalue()


def flip_member_bytes(zip_bytes: bytes, member: str) -> bytes:
    """Corrupt a member's data in place (same length, CRC in the directory unchanged)."""
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
        zi = zf.getinfo(member)
    buf = bytearray(zip_bytes)
    name_len, extra_len = struct.unpack("<HH", buf[zi.header_offset + 26:zi.header_offset + 30])
    start = zi.header_offset + 30 + name_len + extra_len
    middle = start + zi.compress_size // 2
    for i in range(middle, middle + 4):
        buf[i] ^= 0xFF
    assert len(buf) == len(zip_bytes)
    return bytes(buf)


def sync_in_process(config: Path) -> dict[str, str]:
    """Setup only (saves an interpreter start): the same sync, called directly."""
    results = client.sync(load_config(config, environ={}), client.SyncOptions())
    return {r.name: r.status for r in results}


def install_first(lhub: LegacyHub, tmp: Path, files: dict[str, bytes], **config: Any) -> Path:
    """A client with ``files`` installed from the legacy hub at T0; returns its config."""
    lhub.set_package("alpha", zip_tree(files), T0)
    cfg = client_config(tmp, lhub.url, ["alpha"], **config)
    assert sync_in_process(cfg) == {"alpha": "installed"}
    assert tree_bytes(local(tmp)) == files
    return cfg


# -- interoperability ---------------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    {"content_type": "application/json"},
    {"content_type": "text/plain"},  # the old hub is sloppy about content types
    {"send_length": False},  # no Content-Length: the body ends when the connection closes
], ids=["json", "text-plain", "no-content-length"])
def test_sync_installs_byte_identical_and_second_sync_downloads_nothing(
        tmp_path: Path, options: dict[str, Any]) -> None:
    files = make_dataset(tmp_path / "src", files=6, seed=3)
    files["沪市/贵州茅台 600519.csv"] = "日期,收盘\r\n2026-11-23,1700.50\r\n".encode("gbk")
    with legacy_hub(**options) as lhub:
        lhub.set_package("alpha", zip_tree(files), T0)
        cfg = client_config(tmp_path, lhub.url, ["alpha"])

        _, out = sync(cfg)
        assert out["alpha"]["status"] == "installed"
        assert tree_bytes(local(tmp_path)) == files
        # The old client's exact shape and the hub's exact string.
        assert json.loads(last_sync_path(tmp_path).read_text("utf-8")) == {"alpha": T0}
        first = lhub.package_requests("alpha")
        assert len(first) == 1 and first[0].status == 200
        assert "Range" not in first[0].headers  # a fresh download is a plain GET
        assert not staging_dirs(tmp_path)
        assert not list((state_dir(tmp_path) / "downloads").glob("*"))  # no .part left

        _, out = sync(cfg)
        assert out["alpha"]["status"] == "up_to_date"
        assert len(lhub.package_requests("alpha")) == 1  # nothing downloaded again
        assert tree_bytes(local(tmp_path)) == files


def test_naive_timestamps_compared_as_instants(lhub: LegacyHub, tmp_path: Path) -> None:
    """hub.timezone Asia/Shanghai (the machine is in UTC): instants decide, not strings."""
    trees = {k: {"sz/600000.csv": f"version {k}\r\n".encode()} for k in "ABCDE"}
    env = {"TZ": "UTC"}
    lhub.set_package("alpha", zip_tree(trees["A"]), T0)
    cfg = client_config(tmp_path, lhub.url, ["alpha"], hub={"timezone": "Asia/Shanghai"})
    _, out = sync(cfg, env=env)
    assert out["alpha"]["status"] == "installed"
    assert json.loads(last_sync_path(tmp_path).read_text()) == {"alpha": T0}

    # The same instant with an offset (and in UTC): not newer, although the string differs.
    lhub.set_package("alpha", zip_tree(trees["B"]), "2026-11-23T11:31:54.791098+00:00")
    _, out = sync(cfg, env=env)
    assert out["alpha"]["status"] == "up_to_date"
    assert tree_bytes(local(tmp_path)) == trees["A"]
    assert len(lhub.package_requests()) == 1

    # Later as an instant, earlier as a string ("…T12" < "…T19") and earlier if the naive
    # stored value were read in the machine's zone (UTC): must download.
    later = "2026-11-23T12:00:00+00:00"
    lhub.set_package("alpha", zip_tree(trees["C"]), later)
    _, out = sync(cfg, env=env)
    assert out["alpha"]["status"] == "installed"
    assert tree_bytes(local(tmp_path)) == trees["C"]
    assert json.loads(last_sync_path(tmp_path).read_text()) == {"alpha": later}

    # The old hub sends that same instant naive (Shanghai time): string-greater, not newer.
    lhub.set_package("alpha", zip_tree(trees["D"]), "2026-11-23T20:00:00")
    _, out = sync(cfg, env=env)
    assert out["alpha"]["status"] == "up_to_date"
    assert tree_bytes(local(tmp_path)) == trees["C"]
    assert len(lhub.package_requests()) == 2

    # One microsecond later, naive: newer.
    lhub.set_package("alpha", zip_tree(trees["E"]), "2026-11-23T20:00:00.000001")
    _, out = sync(cfg, env=env)
    assert out["alpha"]["status"] == "installed"
    assert tree_bytes(local(tmp_path)) == trees["E"]
    assert json.loads(last_sync_path(tmp_path).read_text()) == {
        "alpha": "2026-11-23T20:00:00.000001"}


def test_old_client_last_sync_json_is_read_and_kept(lhub: LegacyHub, tmp_path: Path) -> None:
    """A ``.last_sync.json`` the old client wrote (compact, other datasets) is honoured."""
    old_tree = {"sz/600000.csv": b"installed by the old client\r\n"}
    for rel, data in old_tree.items():
        (local(tmp_path) / rel).parent.mkdir(parents=True, exist_ok=True)
        (local(tmp_path) / rel).write_bytes(data)
    state_dir(tmp_path).mkdir(parents=True)
    last_sync_path(tmp_path).write_text(json.dumps({"alpha": T0, "beta": "2026-11-20T08:15:02"}))
    before = last_sync_path(tmp_path).read_bytes()

    new_tree = {"sz/600000.csv": b"new\r\n"}
    lhub.set_package("alpha", zip_tree(new_tree), "2026-11-23T11:31:54.791098+00:00")
    cfg = client_config(tmp_path, lhub.url, ["alpha"], hub={"timezone": "Asia/Shanghai"})
    _, out = sync(cfg)
    assert out["alpha"]["status"] == "up_to_date"
    assert out["alpha"]["local_last_updated"] == T0
    assert lhub.package_requests() == []
    assert tree_bytes(local(tmp_path)) == old_tree
    assert last_sync_path(tmp_path).read_bytes() == before

    newer = "2026-11-23T19:31:54.791099"
    lhub.set_package("alpha", zip_tree(new_tree), newer)
    _, out = sync(cfg)
    assert out["alpha"]["status"] == "installed"
    assert tree_bytes(local(tmp_path)) == new_tree
    # Still the old client's shape: a flat dict of strings; the other dataset is kept.
    assert json.loads(last_sync_path(tmp_path).read_text()) == {
        "alpha": newer, "beta": "2026-11-20T08:15:02"}


# -- integrity ---------------------------------------------------------------------------------

@pytest.mark.parametrize("previous", [True, False], ids=["over-previous", "fresh"])
def test_sha256_mismatch_installs_nothing(lhub: LegacyHub, tmp_path: Path,
                                          previous: bool) -> None:
    old = make_dataset(tmp_path / "old", files=3, seed=1)
    new = make_dataset(tmp_path / "new", files=4, seed=2)
    if previous:
        cfg = install_first(lhub, tmp_path, old)
    else:
        cfg = client_config(tmp_path, lhub.url, ["alpha"])
    last_before = last_sync_path(tmp_path).read_bytes() if previous else None
    skip = state_dir(tmp_path)
    before = snapshot(tmp_path, skip)

    body = zip_tree(new)
    lhub.set_package("alpha", body, T1, sha256="00" * 32)
    result, out = sync(cfg, expect=1)
    assert out["alpha"]["status"] == "failed"
    assert "sha256" in out["alpha"]["message"]
    assert "sha256" in result.err
    assert snapshot(tmp_path, skip) == before  # previous tree intact (or still absent)
    if previous:
        assert tree_bytes(local(tmp_path)) == old
        assert last_sync_path(tmp_path).read_bytes() == last_before
    else:
        assert not local(tmp_path).exists()
        assert not last_sync_path(tmp_path).exists() or "alpha" not in json.loads(
            last_sync_path(tmp_path).read_text())
    assert not staging_dirs(tmp_path)

    # Control: the same package with its true sha256 installs.
    lhub.set_package("alpha", body, T1, sha256=hashlib.sha256(body).hexdigest())
    assert sync_in_process(cfg) == {"alpha": "installed"}
    assert tree_bytes(local(tmp_path)) == new


@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "no-length"])
@pytest.mark.parametrize("delta", [1, -1], ids=["announced-bigger", "announced-smaller"])
def test_wrong_package_size_installs_nothing(tmp_path: Path, delta: int,
                                             send_length: bool) -> None:
    old = make_dataset(tmp_path / "old", files=3, seed=1)
    new = make_dataset(tmp_path / "new", files=4, seed=2)
    with legacy_hub(send_length=send_length) as lhub:
        cfg = install_first(lhub, tmp_path, old, hub={"retries": 1})
        last_before = last_sync_path(tmp_path).read_bytes()
        before = snapshot(tmp_path, state_dir(tmp_path))

        body = zip_tree(new)
        lhub.set_package("alpha", body, T1, package_size=len(body) + delta)
        _, out = sync(cfg, expect=1)
        assert out["alpha"]["status"] == "failed"
        assert snapshot(tmp_path, state_dir(tmp_path)) == before
        assert tree_bytes(local(tmp_path)) == old
        assert last_sync_path(tmp_path).read_bytes() == last_before

        # Control: once the hub announces the true size, it installs.
        lhub.set_package("alpha", body, T1)
        assert sync_in_process(cfg) == {"alpha": "installed"}
        assert tree_bytes(local(tmp_path)) == new


# -- hostile archives --------------------------------------------------------------------------

def _ratio_member() -> bytes:
    """~2 MiB compressing about 15:1 — below the default limit (200), above max_ratio 5."""
    rnd = random.Random(5)
    return b"".join(bytes([rnd.randrange(256)]) + b"\0" * 31 for _ in range(65_600))


Case = tuple[Callable[[Path], list[tuple[str | zipfile.ZipInfo, bytes]]], str, dict[str, Any],
             Callable[[Path], list[Path]]]

CASES: dict[str, Case] = {
    # id: (members(tmp), member named in the message, client config, paths that must not exist)
    "absolute-path": (
        lambda tmp: [GOOD_MEMBER, (info(str(tmp / "abs-escape.csv")), b"pwned\r\n")],
        "abs-escape.csv", {}, lambda tmp: [tmp / "abs-escape.csv"]),
    "dotdot-traversal": (
        lambda tmp: [GOOD_MEMBER, (info("../沪市/逃逸.csv"), b"pwned\r\n")],
        "../沪市/逃逸.csv", {}, lambda tmp: [tmp / "local" / "沪市"]),
    "nested-dotdot": (
        lambda tmp: [GOOD_MEMBER, (info("sz/../../../escape.csv"), b"pwned\r\n")],
        "sz/../../../escape.csv", {}, lambda tmp: [tmp / "escape.csv"]),
    "backslash-dotdot": (
        lambda tmp: [GOOD_MEMBER, (info("..\\escape.csv"), b"pwned\r\n")],
        "..\\escape.csv", {}, lambda tmp: [tmp / "local" / "escape.csv"]),
    "drive-letter": (
        lambda tmp: [GOOD_MEMBER, (info("C:/x"), b"pwned\r\n")],
        "C:/x", {}, lambda tmp: []),
    "symlink": (
        lambda tmp: [GOOD_MEMBER, (info("sz/link.csv", stat.S_IFLNK | 0o777), b"/etc/passwd")],
        "sz/link.csv", {}, lambda tmp: []),
    "symlink-windows-made": (  # the mode bits alone make it a link, whatever the host
        lambda tmp: [GOOD_MEMBER, (info("sz/link.csv", stat.S_IFLNK | 0o777, create_system=0),
                                   b"/etc/passwd")],
        "sz/link.csv", {}, lambda tmp: []),
    "char-device": (
        lambda tmp: [GOOD_MEMBER, (info("sz/dev.csv", stat.S_IFCHR | 0o666), b"")],
        "sz/dev.csv", {}, lambda tmp: []),
    "zip-bomb-zeros": (
        lambda tmp: [GOOD_MEMBER, (info("sz/zeros.csv"), b"\0" * (2 * 1024 * 1024 + 1))],
        "sz/zeros.csv", {"sync": {"max_ratio": 5}}, lambda tmp: []),
    "ratio-from-config": (
        lambda tmp: [GOOD_MEMBER, (info("sz/dense.csv"), _ratio_member())],
        "sz/dense.csv", {"sync": {"max_ratio": 5}}, lambda tmp: []),
    "total-size": (
        lambda tmp: [(info(f"sz/big{i}.csv"), random.Random(i).randbytes(600))
                     for i in range(3)],
        "sz/big1.csv", {"sync": {"max_total_bytes": 1000}}, lambda tmp: []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_archive_is_refused(lhub: LegacyHub, tmp_path: Path, case: str) -> None:
    members, named, config, must_not_exist = CASES[case]
    cfg = install_first(lhub, tmp_path, SMALL_A, **config)
    last_before = last_sync_path(tmp_path).read_bytes()
    before = snapshot(tmp_path, state_dir(tmp_path))

    lhub.set_package("alpha", make_zip(members(tmp_path)), T1)
    result, out = sync(cfg, expect=1)
    assert out["alpha"]["status"] == "failed"
    message = out["alpha"]["message"]
    assert repr(named)[1:-1] in message, message
    assert repr(named)[1:-1] in result.err
    # Nothing changed anywhere in the test dir: the installed tree byte for byte, no file
    # escaped, no link or device made, no staging dir (.alpha.dhs-new-*) left.
    assert tree_bytes(local(tmp_path)) == SMALL_A
    assert snapshot(tmp_path, state_dir(tmp_path)) == before
    assert not staging_dirs(tmp_path)
    for path in must_not_exist(tmp_path):
        assert not os.path.lexists(path), path
    assert last_sync_path(tmp_path).read_bytes() == last_before


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED],
                         ids=["stored", "deflated"])
def test_corrupt_member_installs_nothing(lhub: LegacyHub, tmp_path: Path, method: int) -> None:
    files = make_dataset(tmp_path / "src", files=4, seed=4)
    last = sorted(files)[-1]  # corrupt the last member: the others extract first
    body = flip_member_bytes(zip_tree(files, compression=method), last)
    lhub.set_package("alpha", body, T0)  # package_size is the true length of what is served
    cfg = client_config(tmp_path, lhub.url, ["alpha"])
    (tmp_path / "local").mkdir()  # the parent of local_dir may be created; nothing in it
    before = snapshot(tmp_path, state_dir(tmp_path))

    _, out = sync(cfg, expect=1)
    assert out["alpha"]["status"] == "failed"
    assert last in out["alpha"]["message"]
    assert not local(tmp_path).exists()
    assert snapshot(tmp_path, state_dir(tmp_path)) == before
    assert not staging_dirs(tmp_path)
    assert "alpha" not in (json.loads(last_sync_path(tmp_path).read_text())
                           if last_sync_path(tmp_path).exists() else {})


def test_one_bad_dataset_does_not_stop_the_other(lhub: LegacyHub, tmp_path: Path) -> None:
    good = make_dataset(tmp_path / "src-beta", files=3, seed=9)
    lhub.set_package("alpha", make_zip([GOOD_MEMBER, (info("../escape.csv"), b"x")]), T0)
    lhub.set_package("beta", zip_tree(good), T1)
    cfg = client_config(tmp_path, lhub.url, ["alpha", "beta"])

    _, out = sync(cfg, expect=1)
    assert out["alpha"]["status"] == "failed"
    assert "../escape.csv" in out["alpha"]["message"]
    assert out["beta"]["status"] == "installed"
    assert tree_bytes(local(tmp_path, "beta")) == good
    assert not local(tmp_path, "alpha").exists()
    assert not (tmp_path / "local" / "escape.csv").exists()
    assert not staging_dirs(tmp_path)
    assert json.loads(last_sync_path(tmp_path).read_text()) == {"beta": T1}
