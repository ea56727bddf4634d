"""Deflate codecs (zlib, zlib-ng, isal): standard ZIPs either way, fast inflate as strict."""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datahubsync.core.errors import ConfigError, IntegrityError
from datahubsync.datasets import archive, deflate, packager
from datahubsync.datasets.archive import extract_safe
from datahubsync.datasets.packager import build_zip, scan_dataset
from datahubsync.schema import load_config
from tests.helpers import make_dataset, tree_bytes, write_yaml

UNZIP = "/usr/bin/unzip"
needs_unzip = pytest.mark.skipif(not os.path.exists(UNZIP), reason="unzip not installed")
CODECS = list(deflate.CODECS)
INFLATERS = ["isal", "zlib-ng", "zlib"]


@pytest.fixture(autouse=True)
def _fresh_codecs() -> Iterator[None]:
    """Each test starts with nothing imported or warned, and leaves it so."""
    deflate.reset()
    yield
    deflate.reset()


def _dataset(root: Path) -> dict[str, bytes]:
    files = make_dataset(root, files=6, rows=3000)  # stock-like GBK/CRLF, > 1 chunk in all
    big = b"".join(files.values()) * 8  # one member over 1 MiB: several read chunks
    (root / "big.csv").write_bytes(big)
    (root / "empty.csv").write_bytes(b"")
    (root / "noise.bin").write_bytes(os.urandom(5000))  # stored: deflate cannot shrink it
    files.update({"big.csv": big, "empty.csv": b"", "noise.bin": (root / "noise.bin").read_bytes()})
    return files


def _use_inflater(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Make ``name`` the inflater; returns a list that records each decompressobj made."""
    made: list[str] = []
    if name == "zlib":
        monkeypatch.setattr(deflate, "INFLATE_ORDER", ())
        return made
    monkeypatch.setattr(deflate, "INFLATE_ORDER", (name,))
    _, mod = deflate.module(name)
    real = mod.decompressobj

    def spy(*args: Any) -> Any:
        made.append(name)
        return real(*args)

    monkeypatch.setattr(mod, "decompressobj", spy)
    return made


def _missing(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Simulate codec modules that are not installed (or not in the frozen build)."""
    real = deflate._import

    def fake(name: str) -> Any:
        if name in modules:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name)

    monkeypatch.setattr(deflate, "_import", fake)


def _build(src: Path, dest: Path, codec: str, level: int = 6) -> packager.BuiltPackage:
    return build_zip(src, scan_dataset(src), dest, level=level, threads=2, codec=codec)


@needs_unzip
@pytest.mark.parametrize("level", [1, 6, 9])
@pytest.mark.parametrize("codec", CODECS)
def test_each_codec_writes_a_standard_zip(tmp_path: Path, codec: str, level: int,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    files = _dataset(src)
    pkg = _build(src, tmp_path / "p.zip", codec, level)
    assert deflate.module(codec)[0] == codec  # really that codec, no fallback here
    with zipfile.ZipFile(pkg.path) as zf:
        assert zf.testzip() is None
        assert {i.filename: i.compress_type for i in zf.infolist()}["big.csv"] == 8
        assert {n: zf.read(n) for n in zf.namelist()} == files
    test = subprocess.run([UNZIP, "-t", str(pkg.path)], capture_output=True, text=True)
    assert test.returncode == 0 and "No errors detected" in test.stdout, test.stdout
    out = tmp_path / "unzipped"
    subprocess.run([UNZIP, "-q", str(pkg.path), "-d", str(out)], check=True)
    assert tree_bytes(out) == files


@pytest.mark.parametrize("inflater", INFLATERS)
@pytest.mark.parametrize("codec", CODECS)
def test_every_inflater_extracts_every_codec(tmp_path: Path, codec: str, inflater: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    files = _dataset(src)
    pkg = _build(src, tmp_path / "p.zip", codec)
    made = _use_inflater(monkeypatch, inflater)
    dest = tmp_path / "dest"
    dest.mkdir()
    stats = extract_safe(pkg.path, dest)
    assert tree_bytes(dest) == files
    assert (stats.files, stats.bytes) == (len(files), sum(map(len, files.values())))
    deflated = sum(1 for i in zipfile.ZipFile(pkg.path).infolist() if i.compress_type == 8)
    assert made == ([inflater] * deflated if inflater != "zlib" else [])


def test_same_codec_same_bytes_and_codecs_differ_only_in_size(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _dataset(src)
    one = _build(src, tmp_path / "a.zip", "zlib-ng")
    two = _build(src, tmp_path / "b.zip", "zlib-ng")
    assert one.sha256 == two.sha256  # still deterministic
    ref = _build(src, tmp_path / "z.zip", "zlib")
    fast = _build(src, tmp_path / "i.zip", "isal")
    assert ref.files == one.files == fast.files  # the manifest is the data's, not the codec's
    assert len({ref.sha256, one.sha256, fast.sha256}) == 3


def test_missing_codec_falls_back_to_zlib_with_one_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _missing(monkeypatch, "zlib_ng.zlib_ng", "isal.isal_zlib")
    src = tmp_path / "src"
    files = _dataset(src)
    caplog.set_level(logging.WARNING, logger="datahubsync.datasets.deflate")
    first = _build(src, tmp_path / "a.zip", "zlib-ng")
    again = _build(src, tmp_path / "b.zip", "zlib-ng")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "zlib-ng is not available" in warned[0], warned
    reference = _build(src, tmp_path / "z.zip", "zlib")
    assert first.sha256 == again.sha256 == reference.sha256  # exactly zlib's output
    # the client: neither fast inflater, so zlib, and said once
    for name in ("dest", "dest2"):
        (tmp_path / name).mkdir()
        extract_safe(first.path, tmp_path / name)
        assert tree_bytes(tmp_path / name) == files
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and "no fast inflater (isal, zlib-ng)" in warned[1], warned


def test_one_fast_inflater_missing_uses_the_other_silently(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    _missing(monkeypatch, "isal.isal_zlib")
    assert deflate.inflater()[0] == "zlib-ng"
    assert deflate.module("isal")[0] == "zlib"  # a hub set to isal deflates with zlib
    assert deflate.level_for("zlib", 6) == 6
    assert "isal is not available" in caplog.text


def test_unknown_codec_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown deflate codec 'lzma'"):
        deflate.compressor("lzma", 6)


def test_levels_map_onto_isal_range() -> None:
    assert [deflate.level_for("isal", n) for n in range(10)] == [0, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    assert [deflate.level_for("zlib-ng", n) for n in range(10)] == list(range(10))
    assert deflate.level_for("isal", 42) == 3


# -- the fast inflater refuses what zipfile's zlib refuses ---------------------------------

def _member_data_offset(zip_path: Path, name: str) -> tuple[zipfile.ZipInfo, int]:
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(name)
    data = zip_path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:
                                                    info.header_offset + 30])
    return info, info.header_offset + 30 + name_len + extra_len


def _patch(zip_path: Path, at: int, new: bytes) -> None:
    data = bytearray(zip_path.read_bytes())
    data[at:at + len(new)] = new
    zip_path.write_bytes(bytes(data))


def _central(zip_path: Path, name: str) -> int:
    data = zip_path.read_bytes()
    pos = data.index(b"PK\x01\x02")
    while data[pos + 46:pos + 46 + len(name)] != name.encode():
        pos = data.index(b"PK\x01\x02", pos + 4)
    return pos


def _package(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    _dataset(src)
    return _build(src, tmp_path / "p.zip", "zlib-ng").path


def _refused(tmp_path: Path, zip_path: Path, match: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(IntegrityError, match=match):
        extract_safe(zip_path, dest)


@pytest.mark.parametrize("inflater", INFLATERS)
@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_corrupt_deflate_stream_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           inflater: str, where: float) -> None:
    zip_path = _package(tmp_path)
    info, start = _member_data_offset(zip_path, "big.csv")
    at = start + int(info.compress_size * where)
    _patch(zip_path, at, bytes([zip_path.read_bytes()[at] ^ 0xFF]))
    _use_inflater(monkeypatch, inflater)
    _refused(tmp_path, zip_path, "'big.csv'")


@pytest.mark.parametrize("inflater", INFLATERS)
def test_invalid_deflate_block_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          inflater: str) -> None:
    """A block type 3 (reserved): the inflater itself raises, whichever it is."""
    zip_path = _package(tmp_path)
    _, start = _member_data_offset(zip_path, "big.csv")
    _patch(zip_path, start, b"\xff")  # BFINAL=1, BTYPE=11
    made = _use_inflater(monkeypatch, inflater)
    _refused(tmp_path, zip_path, "corrupt archive member 'big.csv'")
    assert made == ([] if inflater == "zlib" else [inflater])


@pytest.mark.parametrize("inflater", INFLATERS)
def test_wrong_crc_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              inflater: str) -> None:
    zip_path = _package(tmp_path)
    info, _ = _member_data_offset(zip_path, "big.csv")
    bad = struct.pack("<I", info.CRC ^ 1)
    _patch(zip_path, info.header_offset + 14, bad)  # local header
    _patch(zip_path, _central(zip_path, "big.csv") + 16, bad)  # central directory
    _use_inflater(monkeypatch, inflater)
    _refused(tmp_path, zip_path, "'big.csv'.*Bad CRC-32")


@pytest.mark.parametrize("inflater", INFLATERS)
@pytest.mark.parametrize("delta", [-1, 1])
def test_declared_size_off_by_one_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             inflater: str, delta: int) -> None:
    zip_path = _package(tmp_path)
    info, _ = _member_data_offset(zip_path, "big.csv")
    _patch(zip_path, _central(zip_path, "big.csv") + 24, struct.pack("<I", info.file_size + delta))
    _use_inflater(monkeypatch, inflater)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises((IntegrityError, archive.UnsafeArchiveError), match="'big.csv'"):
        extract_safe(zip_path, dest)
    out = dest / "big.csv"
    assert not out.exists() or out.stat().st_size <= info.file_size + delta


@pytest.mark.parametrize("inflater", INFLATERS)
def test_truncated_stream_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     inflater: str) -> None:
    """Compressed size cut short: the stream ends before its final block."""
    zip_path = _package(tmp_path)
    info, _ = _member_data_offset(zip_path, "big.csv")
    short = struct.pack("<I", info.compress_size // 2)
    _patch(zip_path, info.header_offset + 18, short)
    _patch(zip_path, _central(zip_path, "big.csv") + 20, short)
    _use_inflater(monkeypatch, inflater)
    _refused(tmp_path, zip_path, "'big.csv'")


# -- the setting ---------------------------------------------------------------------------

def _hub_config(tmp_path: Path, **serve: Any) -> Path:
    make_dataset(tmp_path / "data" / "ds", files=3, rows=50)
    return write_yaml(tmp_path / "hub.yaml", {
        "state_dir": str(tmp_path / "state"),
        "serve": {"data_root": str(tmp_path / "data"), "debounce": 0, **serve}})


def _record_codecs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = packager.compressor

    def spy(codec: str, level: int) -> Any:
        seen.append(codec)
        return real(codec, level)

    monkeypatch.setattr(packager, "compressor", spy)
    return seen


def test_default_codec_is_zlib_ng(tmp_path: Path) -> None:
    loaded = load_config(_hub_config(tmp_path), {})
    assert loaded.config.serve.compress_codec == deflate.DEFAULT_CODEC == "zlib-ng"


@pytest.mark.parametrize("codec", CODECS)
def test_publish_builds_with_the_configured_codec(tmp_path: Path, codec: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from datahubsync.datasets.publish import publish

    loaded = load_config(_hub_config(tmp_path, compress_codec=codec), {})
    seen = _record_codecs(monkeypatch)
    result = publish(loaded, tmp_path / "out", force=True)
    assert result.built and seen == [codec]
    (zip_path,) = (tmp_path / "out" / "package").glob("*.zip")
    assert zipfile.ZipFile(zip_path).testzip() is None


@pytest.mark.parametrize("codec", CODECS)
def test_hub_app_passes_the_configured_codec(tmp_path: Path, codec: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from datahubsync.datasets import routes as hub_routes
    from datahubsync.server import app as app_module

    loaded = load_config(_hub_config(tmp_path, compress_codec=codec), {})
    settings: list[Any] = []
    real = hub_routes.Builder

    def spy(s: Any, *args: Any, **kw: Any) -> Any:
        settings.append(s)
        return real(s, *args, **kw)

    monkeypatch.setattr(hub_routes, "Builder", spy)
    app_module.create_app(loaded, build=False)
    assert [s.compress_codec for s in settings] == [codec]


def test_env_override_and_bad_value(tmp_path: Path) -> None:
    cfg = _hub_config(tmp_path)
    env = {"DATAHUBSYNC_SERVE__COMPRESS_CODEC": "isal"}
    assert load_config(cfg, env).config.serve.compress_codec == "isal"
    with pytest.raises(ConfigError, match="serve.compress_codec"):
        load_config(_hub_config(tmp_path, compress_codec="zstd"), {})


def test_zlib_module_errors_are_all_caught() -> None:
    """What each inflater raises on garbage is in what extract_member catches."""
    for name in ("isal", "zlib-ng"):
        _, mod = deflate.module(name)
        with pytest.raises(deflate.errors()):
            d = mod.decompressobj(-15)
            d.decompress(b"\xff" * 64)
    with pytest.raises(deflate.errors()):
        zlib.decompressobj(-15).decompress(b"\xff" * 64)
