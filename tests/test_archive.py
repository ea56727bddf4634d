"""Tests for datahubsync.datasets.archive: safe ZIP extraction.

Every hostile archive puts a harmless member FIRST, so a check that ran during
extraction instead of before it would leave a file behind and fail the test.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import stat
import struct
import subprocess
import threading
import time
import warnings
import zipfile
from pathlib import Path

import pytest

from datahubsync.core.errors import IntegrityError, UnsafeArchiveError
from datahubsync.datasets.archive import (
    ExtractLimits,
    ExtractStats,
    check_archive,
    extract_safe,
)

GOOD = ("ok.csv", b"code,close\n600519,1700.5\n")


def _info(
    name: str, *, mode: int | None = None, date_time=(2024, 1, 2, 3, 4, 6)
) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=date_time)
    info.create_system = 3
    info.compress_type = zipfile.ZIP_DEFLATED
    if mode is not None:
        info.external_attr = mode << 16
    return info


def _make(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns on duplicate names
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                zf.writestr(name if isinstance(name, zipfile.ZipInfo) else _info(name), data)
    return path


def _dest(tmp_path: Path) -> Path:
    dest = tmp_path / "dest"
    dest.mkdir(parents=True)
    return dest


def _stock_csv(seed: int, rows: int = 2000) -> bytes:
    rnd = random.Random(seed)
    lines = ["日期,开盘,收盘,成交量"] + [
        f"2024-01-{i % 28 + 1:02d},{rnd.uniform(5, 50):.2f},{rnd.uniform(5, 50):.2f},"
        f"{rnd.randint(1000, 10**7)}"
        for i in range(rows)
    ]
    return "\n".join(lines).encode("gbk")


def test_round_trip_chinese_names_gbk_and_mtimes(tmp_path: Path) -> None:
    members = {
        "600519_贵州茅台/日线.csv": (_stock_csv(1), (2024, 3, 5, 14, 30, 8)),
        "000001_平安银行/日线.csv": (_stock_csv(2), (2023, 12, 31, 23, 59, 58)),
        "000001_平安银行/子目录/分钟.csv": (b"", (2022, 6, 1, 0, 0, 0)),
        "README.txt": ("说明".encode("gbk"), (2021, 7, 8, 9, 10, 12)),
    }
    zip_path = tmp_path / "pkg.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr(_info("空目录/"), b"")
        for name, (data, dt) in members.items():
            info = _info(name, mode=stat.S_IFREG | 0o644, date_time=dt)
            if name == "README.txt":
                info.compress_type = zipfile.ZIP_STORED
            zf.writestr(info, data)
    with zipfile.ZipFile(zip_path) as zf:
        assert all(i.flag_bits & 0x800 for i in zf.infolist() if not i.filename.isascii())
        assert sorted(i.filename for i in check_archive(zf)) == sorted(members)

    seen: list[int] = []
    dest = _dest(tmp_path)
    stats = extract_safe(zip_path, dest, progress=seen.append)

    total = sum(len(d) for d, _ in members.values())
    assert stats == ExtractStats(files=len(members), bytes=total)
    assert sum(seen) == total
    assert (dest / "空目录").is_dir()
    for name, (data, dt) in members.items():
        out = dest / name
        assert out.read_bytes() == data
        assert out.stat().st_mtime == time.mktime((*dt, 0, 0, -1))


def test_fsync_mode_and_case_distinct_names(tmp_path: Path) -> None:
    zip_path = _make(tmp_path / "p.zip", [("d/A.csv", b"upper"), ("d/a.csv", b"lower")])
    dest = _dest(tmp_path)
    assert extract_safe(zip_path, dest, fsync=True) == ExtractStats(files=2, bytes=10)
    assert (dest / "d/A.csv").read_bytes() == b"upper"
    assert (dest / "d/a.csv").read_bytes() == b"lower"


@pytest.mark.skipif(shutil.which("zip") is None, reason="needs Info-ZIP zip")
def test_infozip_archive_round_trips(tmp_path: Path) -> None:
    """zip -r stores dir entries, Unix modes and UTF-8 names without the UTF-8 flag."""
    src = tmp_path / "src"
    files = {"600519_贵州茅台/日线.csv": _stock_csv(3), "000001_平安银行/日线.csv": _stock_csv(4)}
    stamp = time.mktime((2024, 2, 3, 4, 5, 6, 0, 0, -1))
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
        os.utime(src / name, (stamp, stamp))
    zip_path = tmp_path / "pkg.zip"
    subprocess.run(["zip", "-r", "-q", str(zip_path), "."], cwd=src, check=True)
    dest = _dest(tmp_path)
    assert extract_safe(zip_path, dest).files == 2
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
        assert (dest / name).stat().st_mtime == stamp


# kind: (name, Unix mode or None, create_system, expected reason)
HOSTILE = {
    "absolute": ("/etc/cron.d/evil", None, 3, "absolute"),
    "backslash_absolute": ("\\evil.csv", None, 3, "absolute"),
    "traversal": ("../evil.csv", None, 3, "'..'"),
    "nested_traversal": ("a/../../b.csv", None, 3, "'..'"),
    "backslash_traversal": ("..\\evil.csv", None, 3, "'..'"),
    "drive_letter": ("C:/x.csv", None, 3, "drive"),
    "drive_letter_backslash": ("C:\\x.csv", None, 3, "drive"),
    "drive_relative": ("C:x.csv", None, 3, "drive"),
    "dot_dir": ("./", None, 3, "empty"),
    "dot_file": (".", None, 3, "empty"),
    "symlink": ("link", stat.S_IFLNK | 0o777, 3, "symbolic link"),
    "symlink_non_unix": ("link", stat.S_IFLNK | 0o777, 0, "symbolic link"),
    "char_device": ("dev", stat.S_IFCHR | 0o644, 3, "special file"),
    "block_device": ("blk", stat.S_IFBLK | 0o644, 3, "special file"),
    "fifo": ("fifo", stat.S_IFIFO | 0o644, 3, "special file"),
    "socket": ("sock", stat.S_IFSOCK | 0o644, 3, "special file"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_member_rejected_before_writing(tmp_path: Path, kind: str) -> None:
    name, mode, system, reason = HOSTILE[kind]
    info = _info(name, mode=mode)
    info.create_system = system
    zip_path = _make(tmp_path / "p.zip", [GOOD, (info, b"/etc/passwd")])
    dest = _dest(tmp_path)
    with pytest.raises(UnsafeArchiveError) as exc:
        extract_safe(zip_path, dest)
    assert repr(name) in str(exc.value)
    assert reason in str(exc.value)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil.csv").exists()


@pytest.mark.parametrize(
    "members, bad",
    [
        ([GOOD, ("dup.csv", b"1"), ("dup.csv", b"2")], "dup.csv"),
        ([GOOD, ("d/x.csv", b"1"), ("d\\x.csv", b"2")], "d\\x.csv"),
        ([GOOD, ("d/x.csv", b"1"), ("d//./x.csv", b"2")], "d//./x.csv"),
        ([GOOD, ("a", b"file"), ("a/b.csv", b"2")], "a/b.csv"),
    ],
    ids=["exact", "backslash", "dot_slash", "file_is_parent"],
)
def test_duplicate_or_conflicting_names(tmp_path: Path, members: list, bad: str) -> None:
    zip_path = _make(tmp_path / "p.zip", members)
    dest = _dest(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=repr(bad).replace("\\", "\\\\")):
        extract_safe(zip_path, dest)
    assert list(dest.iterdir()) == []


def test_nul_in_name_rejected(tmp_path: Path) -> None:
    # zipfile truncates names at NUL when writing, so patch the bytes in place.
    zip_path = _make(tmp_path / "p.zip", [GOOD, ("evil.csvX.txt", b"x")])
    data = zip_path.read_bytes()
    assert data.count(b"evil.csvX.txt") == 2  # local header and central directory
    zip_path.write_bytes(data.replace(b"evil.csvX.txt", b"evil.csv\0.txt"))
    dest = _dest(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="NUL"):
        extract_safe(zip_path, dest)
    assert list(dest.iterdir()) == []


def test_ratio_bomb_rejected(tmp_path: Path) -> None:
    zeros = b"\0" * (2 * 1024 * 1024)  # compresses ~1000:1, over the default 200
    zip_path = _make(tmp_path / "p.zip", [GOOD, ("bomb.csv", zeros)])
    dest = _dest(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="'bomb.csv'.*ratio"):
        extract_safe(zip_path, dest)
    assert list(dest.iterdir()) == []
    # The same member passes when the ratio limit allows it.
    assert extract_safe(zip_path, _dest(tmp_path / "x"), ExtractLimits(max_ratio=1e6)).files == 2


def test_small_compressible_member_is_not_a_bomb(tmp_path: Path) -> None:
    zip_path = _make(tmp_path / "p.zip", [("zeros.csv", b"\0" * 1024 * 1024)])
    assert extract_safe(zip_path, _dest(tmp_path)).bytes == 1024 * 1024


@pytest.mark.parametrize(
    "limits, match",
    [
        (ExtractLimits(max_total_bytes=150), "'b.csv'.*total"),
        (ExtractLimits(max_member_bytes=99), "'a.csv'.*limit 99"),
        (ExtractLimits(max_members=2), "3 members"),
    ],
    ids=["total", "member", "count"],
)
def test_size_and_count_limits(tmp_path: Path, limits: ExtractLimits, match: str) -> None:
    members = [("a.csv", b"1" * 100), ("b.csv", b"2" * 100), ("c.csv", b"")]
    zip_path = _make(tmp_path / "p.zip", members)
    dest = _dest(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=match):
        extract_safe(zip_path, dest, limits)
    assert list(dest.iterdir()) == []
    assert extract_safe(zip_path, _dest(tmp_path / "ok"), ExtractLimits()).files == 3


def _patch_central_size(zip_path: Path, name: bytes, size: int) -> None:
    """Overwrite the uncompressed size of ``name`` in the central directory."""
    data = bytearray(zip_path.read_bytes())
    pos = data.index(b"PK\x01\x02")
    while data[pos + 46 : pos + 46 + len(name)] != name:
        pos = data.index(b"PK\x01\x02", pos + 4)
    data[pos + 24 : pos + 28] = struct.pack("<I", size)
    zip_path.write_bytes(bytes(data))


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_lying_header_smaller_never_overwrites(tmp_path: Path, method: int) -> None:
    info = _info("liar.csv")
    info.compress_type = method
    zip_path = _make(tmp_path / "p.zip", [(info, _stock_csv(5))])
    _patch_central_size(zip_path, b"liar.csv", 1000)
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.getinfo("liar.csv").file_size == 1000
    dest = _dest(tmp_path)
    with pytest.raises((UnsafeArchiveError, IntegrityError), match="'liar.csv'"):
        extract_safe(zip_path, dest)
    out = dest / "liar.csv"
    assert not out.exists() or out.stat().st_size <= 1000


def test_lying_header_larger_is_integrity_error(tmp_path: Path) -> None:
    zip_path = _make(tmp_path / "p.zip", [("short.csv", _stock_csv(6, rows=50))])
    _patch_central_size(zip_path, b"short.csv", 10**6)
    with pytest.raises(IntegrityError, match="'short.csv'"):
        extract_safe(zip_path, _dest(tmp_path))


def test_stream_longer_than_declared_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The byte counter itself, in case the zip reader ever trusts another length."""
    zip_path = _make(tmp_path / "p.zip", [("x.csv", b"x" * 100)])
    flood = 3 * 1024 * 1024
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info: io.BytesIO(b"y" * flood))
    dest = _dest(tmp_path)
    with pytest.raises(UnsafeArchiveError, match="'x.csv'.*declared size 100"):
        extract_safe(zip_path, dest)
    assert (dest / "x.csv").stat().st_size <= 100


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_corrupt_data_is_integrity_error(tmp_path: Path, method: int) -> None:
    info = _info("data.csv")
    info.compress_type = method
    zip_path = _make(tmp_path / "p.zip", [(info, _stock_csv(7))])
    with zipfile.ZipFile(zip_path) as zf:
        zi = zf.getinfo("data.csv")
    data = bytearray(zip_path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[zi.header_offset + 26 : zi.header_offset + 30])
    start = zi.header_offset + 30 + name_len + extra_len
    data[start + zi.compress_size // 2] ^= 0xFF
    zip_path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="'data.csv'"):
        extract_safe(zip_path, _dest(tmp_path))


def test_not_a_zip_is_integrity_error(tmp_path: Path) -> None:
    bad = tmp_path / "pkg.zip"
    bad.write_bytes(b"<html>502 Bad Gateway</html>")
    with pytest.raises(IntegrityError, match="pkg.zip"):
        extract_safe(bad, _dest(tmp_path))


def test_invalid_utf8_name_is_integrity_error(tmp_path: Path) -> None:
    zip_path = _make(tmp_path / "pkg.zip", [("badé.csv", b"x")])
    data = zip_path.read_bytes()
    assert data.count("é".encode()) == 2
    zip_path.write_bytes(data.replace("é".encode(), b"\xff\xfe"))
    with pytest.raises(IntegrityError, match="pkg.zip"):
        extract_safe(zip_path, _dest(tmp_path))


def test_existing_symlink_in_dest_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.csv"
    outside.write_bytes(b"keep")
    dest = _dest(tmp_path)
    (dest / "x.csv").symlink_to(outside)
    zip_path = _make(tmp_path / "p.zip", [("x.csv", b"overwrite")])
    with pytest.raises(OSError):
        extract_safe(zip_path, dest)
    assert outside.read_bytes() == b"keep"


def _many(tmp_path: Path, count: int = 40) -> tuple[Path, dict[str, bytes]]:
    members = {f"d{n % 4}/f{n}.csv": _stock_csv(n, rows=50 + 37 * n) for n in range(count)}
    return _make(tmp_path / "many.zip", list(members.items())), members


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_extract_the_same_tree_with_every_byte_counted(tmp_path: Path,
                                                               threads: int) -> None:
    zip_path, members = _many(tmp_path)
    seen: list[int] = []
    writers: set[str] = set()

    def progress(amount: int) -> None:
        seen.append(amount)
        writers.add(threading.current_thread().name)

    stats = extract_safe(zip_path, _dest(tmp_path), progress=progress, threads=threads)
    assert _tree(tmp_path / "dest") == members
    assert stats == ExtractStats(files=len(members), bytes=sum(map(len, members.values())))
    assert sum(seen) == stats.bytes
    assert len(writers) == threads  # every thread wrote members, none was the caller's


def test_a_corrupt_member_fails_a_threaded_extraction_once(tmp_path: Path) -> None:
    zip_path, _members = _many(tmp_path)
    with zipfile.ZipFile(zip_path) as zf:
        zi = zf.getinfo("d1/f29.csv")
    data = bytearray(zip_path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[zi.header_offset + 26:zi.header_offset + 30])
    data[zi.header_offset + 30 + name_len + extra_len + zi.compress_size // 2] ^= 0xFF
    zip_path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="'d1/f29.csv'"):
        extract_safe(zip_path, _dest(tmp_path), threads=2)
