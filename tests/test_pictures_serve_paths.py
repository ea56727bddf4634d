r"""The picture path mapping (pure) and the confined walk (real directories and symlinks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from datahubsync.pictures.paths import (
    make_roots,
    map_path,
    resolve_beneath,
    split_client_path,
)
from tests.traversal_corpus import build_tree, client_paths


def test_maps_with_the_longest_prefix_either_slash_any_drive_case(tmp_path: Path) -> None:
    roots = make_roots([("D:\\pic", tmp_path / "pic"), ("D:\\pic\\2025\\special", tmp_path / "sp"),
                        ("E:/archive", tmp_path / "arch"), ("/data/pic", tmp_path / "posix")])
    cases = {
        "D:\\pic\\2025\\10\\01\\a.jpg": (tmp_path / "pic", ("2025", "10", "01", "a.jpg")),
        "d:/pic/2025/10/01/a.jpg": (tmp_path / "pic", ("2025", "10", "01", "a.jpg")),
        "D:\\PIC\\2025/x.JPG": (tmp_path / "pic", ("2025", "x.JPG")),  # below prefix: as written
        "D:\\pic\\2025\\special\\b.jpg": (tmp_path / "sp", ("b.jpg",)),
        "D:\\pic\\2025\\specialist\\b.jpg": (tmp_path / "pic", ("2025", "specialist", "b.jpg")),
        "e:\\archive\\c.jpg": (tmp_path / "arch", ("c.jpg",)),
        "/data/pic/d.jpg": (tmp_path / "posix", ("d.jpg",)),
    }
    for text, (root, parts) in cases.items():
        mapped = map_path(text, roots)
        assert mapped is not None, text
        assert (mapped.root.path, mapped.parts) == (str(root), parts), text
        assert mapped.local == str(root) + "/" + "/".join(parts)
    assert map_path("/DATA/pic/d.jpg", roots) is None  # POSIX prefixes are case-sensitive
    assert map_path("D:\\picture\\a.jpg", roots) is None  # a prefix matches whole segments


@pytest.mark.parametrize("text", [
    "", "a\\b", "D:pic\\a", "\\\\host\\share\\a", "\\\\?\\D:\\a", "D:\\..\\a", "D:\\a\\..\\b",
    "D:\\a\x00b", "D:\\a:stream", "D:\\" + "x" * 256, "D:\\" + "a\\" * 2100,
])
def test_split_refuses(text: str) -> None:
    assert split_client_path(text) is None


def test_split_accepts_and_normalises() -> None:
    parsed = split_client_path("d:\\pic//2025\\.\\a.jpg")
    assert parsed is not None and parsed.anchor == "D:" and parsed.parts == ("pic", "2025",
                                                                            "a.jpg")


def test_root_prefix_must_be_absolute(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        make_roots([("pic", tmp_path)])


def test_corpus_resolves_to_nothing_and_real_files_resolve(tmp_path: Path) -> None:
    tree = build_tree(tmp_path)
    roots = make_roots([("D:\\pic", tree.root)])
    for text in client_paths(tmp_path):
        mapped = map_path(text, roots)
        assert mapped is None or resolve_beneath(mapped.root.path, mapped.parts) is None, text
    for text, data in tree.files.items():
        mapped = map_path(text, roots)
        assert mapped is not None
        found = resolve_beneath(mapped.root.path, mapped.parts)
        assert found is not None and Path(found[0]).read_bytes() == data
        assert Path(found[0]).resolve() == Path(found[0])  # symlink-free


def test_symlinks_inside_the_root_are_followed(tmp_path: Path) -> None:
    tree = build_tree(tmp_path)
    root = str(tree.root)
    (tree.root / "by_abs.jpg").symlink_to(tree.root / "ok.jpg")  # absolute, but inside
    (tree.root / "2025" / "up").symlink_to("..")  # climbs, but stays inside
    assert resolve_beneath(root, ["by_abs.jpg"]) is not None
    found = resolve_beneath(root, ["2025", "up", "ok.jpg"])
    assert found is not None and found[0] == f"{root}/ok.jpg"
    assert resolve_beneath(root, ["2025", "up", "..", "outside", "secret.txt"]) is None
