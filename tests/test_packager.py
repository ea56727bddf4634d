"""Tests for the hand-written parallel ZIP packager."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import struct
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from datahubsync.datasets import packager
from datahubsync.datasets.packager import BuiltPackage, PackageEntry, build_zip, scan_dataset

UNZIP = "/usr/bin/unzip"
needs_unzip = pytest.mark.skipif(not os.path.exists(UNZIP), reason="unzip not installed")


def _csv_bytes(rows: int, seed: int = 0) -> bytes:
    """Stock-like GBK text with CRLF, as production data is."""
    rnd = random.Random(seed)
    lines = ["日期,开盘,最高,最低,收盘,成交量"]
    for i in range(rows):
        p = rnd.uniform(5, 50)
        lines.append(f"2020-01-{i % 28 + 1:02d},{p:.2f},{p * 1.02:.2f},{p * 0.98:.2f},"
                     f"{p * 1.01:.2f},{rnd.randint(1000, 10**7)}")
    return ("\r\n".join(lines) + "\r\n").encode("gbk")


def _make_dataset(root: Path) -> dict[str, bytes]:
    files = {
        "README.txt": b"plain ascii\n",
        "empty.csv": b"",
        "sh600000_浦发银行/daily.csv": _csv_bytes(200, 1),
        "sh600000_浦发银行/分钟线.csv": _csv_bytes(50, 2),
        "sz000001/daily.csv": _csv_bytes(30000, 3),  # > 1 MiB: several read chunks
        "sz000001/noise.bin": random.Random(4).randbytes(3000),  # incompressible
        "a/b/c/deep.csv": _csv_bytes(5, 5),
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def _build(root: Path, tmp_path: Path, **kw: object) -> BuiltPackage:
    return build_zip(root, scan_dataset(root), tmp_path / "out.zip", **kw)  # type: ignore[arg-type]


def _check_roundtrip(pkg: BuiltPackage, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(pkg.path) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == sorted(files)
        for name, data in files.items():
            assert zf.read(name) == data, name
    assert pkg.file_count == len(files)
    assert pkg.total_size == sum(map(len, files.values()))


def _unzip_ok(path: Path) -> None:
    r = subprocess.run([UNZIP, "-t", "-qq", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path / "ds"
    root.mkdir()
    return root, _make_dataset(root)


def test_scan_sorted_skips_symlinks_and_temp(dataset: tuple[Path, dict[str, bytes]]) -> None:
    root, files = dataset
    (root / ".dhs-tmp.zip").write_bytes(b"partial")
    (root / ".dhs-work").mkdir()
    (root / ".dhs-work" / "x.csv").write_bytes(b"x")
    (root / "link.csv").symlink_to(root / "README.txt")
    (root / "linkdir").symlink_to(root / "a")
    entries = scan_dataset(root)
    assert [e.relpath for e in entries] == sorted(files)
    by = {e.relpath: e for e in entries}
    st = (root / "sz000001/daily.csv").stat()
    assert by["sz000001/daily.csv"] == PackageEntry("sz000001/daily.csv", st.st_size,
                                                    st.st_mtime_ns)


def test_roundtrip_and_compression(dataset: tuple[Path, dict[str, bytes]],
                                   tmp_path: Path) -> None:
    root, files = dataset
    pkg = _build(root, tmp_path, threads=2)
    _check_roundtrip(pkg, files)
    with zipfile.ZipFile(pkg.path) as zf:
        big = zf.getinfo("sz000001/daily.csv")
        assert big.compress_type == zipfile.ZIP_DEFLATED
        assert big.compress_size < big.file_size * 0.6
        assert zf.getinfo("sz000001/noise.bin").compress_type == zipfile.ZIP_STORED
        assert not any(i.is_dir() for i in zf.infolist())
    assert pkg.size < sum(map(len, files.values()))


def test_non_ascii_names_have_utf8_flag(dataset: tuple[Path, dict[str, bytes]],
                                        tmp_path: Path) -> None:
    root, _ = dataset
    pkg = _build(root, tmp_path)
    raw = pkg.path.read_bytes()
    with zipfile.ZipFile(pkg.path) as zf:
        info = zf.getinfo("sh600000_浦发银行/分钟线.csv")  # found => name decoded correctly
        assert info.flag_bits & 0x800  # central directory record
        assert zf.getinfo("README.txt").flag_bits & 0x800 == 0
        off = info.header_offset
        assert raw[off:off + 4] == b"PK\x03\x04"
        assert struct.unpack_from("<H", raw, off + 6)[0] & 0x800  # local header too
        assert raw[off + 30:off + 30 + len(info.filename.encode())] == info.filename.encode()


@needs_unzip
def test_unzip_accepts(dataset: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    root, files = dataset
    pkg = _build(root, tmp_path)
    _unzip_ok(pkg.path)
    out = tmp_path / "x"
    subprocess.run([UNZIP, "-qq", str(pkg.path), "-d", str(out)], check=True)
    for rel, data in files.items():
        assert (out / rel).read_bytes() == data


def test_sha256_and_size_match_disk(dataset: tuple[Path, dict[str, bytes]],
                                    tmp_path: Path) -> None:
    root, _ = dataset
    pkg = _build(root, tmp_path)
    raw = pkg.path.read_bytes()
    assert pkg.size == len(raw) == pkg.path.stat().st_size
    assert pkg.sha256 == hashlib.sha256(raw).hexdigest()
    assert pkg.path == tmp_path / "out.zip"


def test_deterministic_across_thread_counts(dataset: tuple[Path, dict[str, bytes]],
                                            tmp_path: Path) -> None:
    root, _ = dataset
    entries = scan_dataset(root)
    a = build_zip(root, entries, tmp_path / "a.zip", threads=1)
    b = build_zip(root, entries, tmp_path / "b.zip", threads=5)
    assert a.sha256 == b.sha256
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


def test_vanished_file_skipped(dataset: tuple[Path, dict[str, bytes]], tmp_path: Path,
                               caplog: pytest.LogCaptureFixture) -> None:
    root, files = dataset
    entries = scan_dataset(root)
    (root / "sh600000_浦发银行/daily.csv").unlink()
    del files["sh600000_浦发银行/daily.csv"]
    with caplog.at_level(logging.WARNING, logger=packager.__name__):
        pkg = build_zip(root, entries, tmp_path / "out.zip")
    _check_roundtrip(pkg, files)
    assert any("sh600000_浦发银行/daily.csv" in r.getMessage() for r in caplog.records)


def test_resized_file_uses_actual_bytes(dataset: tuple[Path, dict[str, bytes]],
                                        tmp_path: Path) -> None:
    root, files = dataset
    entries = scan_dataset(root)
    files["a/b/c/deep.csv"] += b"2024-01-02,1,2,3,4,5\r\n"
    files["README.txt"] = b"x"
    for rel in ("a/b/c/deep.csv", "README.txt"):
        (root / rel).write_bytes(files[rel])
    pkg = build_zip(root, entries, tmp_path / "out.zip")
    _check_roundtrip(pkg, files)


def test_empty_files(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "d").mkdir(parents=True)
    files = {"a.csv": b"", "d/b.csv": b""}
    for rel in files:
        (root / rel).touch()
    pkg = _build(root, tmp_path)
    _check_roundtrip(pkg, files)
    if os.path.exists(UNZIP):
        _unzip_ok(pkg.path)


def test_empty_dataset(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    pkg = _build(root, tmp_path)
    assert (pkg.file_count, pkg.total_size, pkg.size) == (0, 0, 22)  # bare EOCD
    with zipfile.ZipFile(pkg.path) as zf:
        assert zf.namelist() == []
        assert zf.testzip() is None
    assert pkg.sha256 == hashlib.sha256(pkg.path.read_bytes()).hexdigest()


@pytest.fixture
def shanghai_tz(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A non-UTC zone, so 'local time' is distinguishable from UTC."""
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("shanghai_tz")
def test_dos_timestamps_local_time_and_clamped(tmp_path: Path) -> None:
    if time.localtime(0).tm_hour != 8:
        pytest.skip("tz database unavailable")
    root = tmp_path / "ds"
    root.mkdir()
    when = time.mktime((2021, 6, 15, 12, 34, 56, 0, 0, -1))
    (root / "new.csv").write_bytes(b"1")
    (root / "old.csv").write_bytes(b"2")
    os.utime(root / "new.csv", (when, when))
    (root / "far.csv").write_bytes(b"3")
    os.utime(root / "old.csv", (86400 * 365, 86400 * 365))  # 1971
    far = time.mktime((2110, 3, 1, 0, 0, 0, 0, 0, -1))
    os.utime(root / "far.csv", (far, far))
    pkg = _build(root, tmp_path)
    with zipfile.ZipFile(pkg.path) as zf:
        assert zf.getinfo("new.csv").date_time == (2021, 6, 15, 12, 34, 56)
        assert zf.getinfo("old.csv").date_time == (1980, 1, 1, 0, 0, 0)
        assert zf.getinfo("far.csv").date_time == (2107, 12, 31, 23, 59, 58)


def test_large_member_spools_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packager, "_SPOOL_MAX_SIZE", 4096)
    root = tmp_path / "ds"
    root.mkdir()
    files = {"big.csv": _csv_bytes(60000, 9), "small.csv": b"a,b\r\n"}
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    _check_roundtrip(_build(root, tmp_path, threads=2), files)


def _local_header(raw: bytes, info: zipfile.ZipInfo) -> tuple[int, int, int, bytes]:
    """(flags, csize, usize, extra) of the local header zipfile itself does not check."""
    off = info.header_offset
    sig, _, flags, _, _, _, _, csize, usize, nlen, xlen = struct.unpack_from(
        "<IHHHHHIIIHH", raw, off)
    assert sig == 0x04034B50
    return flags, csize, usize, raw[off + 30 + nlen:off + 30 + nlen + xlen]


def _zip64_checks(pkg: BuiltPackage, files: dict[str, bytes]) -> bytes:
    _check_roundtrip(pkg, files)
    raw = pkg.path.read_bytes()
    assert b"PK\x06\x06" in raw and b"PK\x06\x07" in raw  # zip64 EOCD record + locator
    assert hashlib.sha256(raw).hexdigest() == pkg.sha256 and len(raw) == pkg.size
    if os.path.exists(UNZIP):
        _unzip_ok(pkg.path)
    return raw


def test_forced_zip64(dataset: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    root, files = dataset
    pkg = _build(root, tmp_path, _force_zip64=True)
    raw = _zip64_checks(pkg, files)
    with zipfile.ZipFile(pkg.path) as zf:
        for info in zf.infolist():  # every central record carries usize, csize, offset
            assert info.extra == struct.pack("<HHQQQ", 1, 24, info.file_size,
                                             info.compress_size, info.header_offset)
            _, csize, usize, extra = _local_header(raw, info)
            assert (csize, usize) == (0xFFFFFFFF, 0xFFFFFFFF)
            assert extra == struct.pack("<HHQQ", 1, 16, info.file_size, info.compress_size)
    eocd = raw[-22:]
    assert eocd[:4] == b"PK\x05\x06"
    assert struct.unpack("<HHII", eocd[8:20]) == (0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)


def test_zip64_thresholds_mixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lowered limits: small members stay 32-bit, later offsets and big sizes go ZIP64."""
    monkeypatch.setattr(packager, "_ZIP64_LIMIT", 2000)
    monkeypatch.setattr(packager, "_ENTRIES_LIMIT", 4)
    root = tmp_path / "ds"
    root.mkdir()
    files = {"a.txt": b"tiny", "b.csv": _csv_bytes(400, 1), "c.txt": b"x" * 10,
             "d_数据.csv": _csv_bytes(3, 2), "e.txt": b""}
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    pkg = _build(root, tmp_path)
    raw = _zip64_checks(pkg, files)
    with zipfile.ZipFile(pkg.path) as zf:
        assert zf.getinfo("a.txt").extra == b""  # offset 0, tiny: no zip64 needed
        b = zf.getinfo("b.csv")
        assert b.extra == struct.pack("<HHQQ", 1, 16, b.file_size, b.compress_size)
        assert _local_header(raw, b)[3] == b.extra  # local header: usize, csize too
        assert _local_header(raw, zf.getinfo("e.txt"))[3] == b""  # offset isn't in local
        assert zf.getinfo("e.txt").extra == struct.pack("<HHQ", 1, 8, zf.getinfo("e.txt")
                                                        .header_offset)  # offset only
    assert struct.unpack("<H", raw[-22 + 8:-22 + 10])[0] == 0xFFFF  # 5 entries >= limit 4


def test_error_removes_dest(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "dir.csv").mkdir(parents=True)
    (root / "ok.csv").write_bytes(b"1")
    entries = [PackageEntry("dir.csv", 0, 0), PackageEntry("ok.csv", 1, 0)]  # dir: not a file
    with pytest.raises(IsADirectoryError):
        build_zip(root, entries, tmp_path / "out.zip")
    assert not (tmp_path / "out.zip").exists()


def test_unzip_binary_present() -> None:
    """The unzip-based checks above are only meaningful if unzip is really there."""
    assert shutil.which("unzip") or os.path.exists(UNZIP)


def test_compress_window_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers may run at most ~2*threads members ahead of a slow writer (memory bound)."""
    root = tmp_path / "ds"
    root.mkdir()
    files = {f"f{i:03d}.csv": _csv_bytes(20, i) for i in range(40)}
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    started: list[int] = []
    ahead: list[int] = []
    real_compress, real_write = packager._compress, packager._write_member

    def compress(*a: object) -> object:
        started.append(1)
        return real_compress(*a)  # type: ignore[arg-type]

    def write(*a: object) -> bytes:
        time.sleep(0.003)
        ahead.append(len(started) - len(ahead))
        return real_write(*a)  # type: ignore[arg-type]

    monkeypatch.setattr(packager, "_compress", compress)
    monkeypatch.setattr(packager, "_write_member", write)
    _check_roundtrip(_build(root, tmp_path, threads=2), files)
    assert max(ahead) <= 1 + 2 * 2
