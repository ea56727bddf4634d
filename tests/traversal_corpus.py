r"""Paths that must never reach a file outside a picture root, and the tree to try them on.

:func:`build_tree` lays out a root (client prefix ``D:\pic``) with real
pictures, a secret file *outside* it, a sibling directory whose name starts
with the root's name (``pic_evil``: catches string-prefix checks), and
symlinks inside the root that point outside (relative, absolute, a directory
link, a loop) next to one that stays inside (allowed).

:data:`CLIENT_PATHS` are client paths as a task table could hold them (used as
they are by the legacy TCP protocol, and quoted into ``/files/...`` URLs);
:data:`RAW_URL_TARGETS` are HTTP request targets with encoding tricks. Every
one must be refused (or name nothing), answered exactly like a missing file,
and never return the secret. Shared by the serve tests and the client tests.
"""

from __future__ import annotations

import os
import secrets
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

PREFIX = "D:\\pic"


@dataclass(frozen=True)
class Tree:
    root: Path  # what D:\pic maps to
    outside: Path  # a directory next to the root, never to be served
    secret: bytes  # content of every file outside the root
    files: dict[str, bytes]  # client path -> content, for files that must be served


def build_tree(base: Path, picture_bytes: int = 4096) -> Tree:
    """The root, the files outside it and the symlinks between them, under ``base``."""
    root, outside, evil = base / "pic", base / "outside", base / "pic_evil"
    secret = b"TOP-SECRET-" + secrets.token_hex(16).encode()
    for folder in (root / "2025" / "10" / "01", outside, evil):
        folder.mkdir(parents=True)
    (outside / "secret.txt").write_bytes(secret)
    (evil / "secret.jpg").write_bytes(secret)
    (base / "secret.txt").write_bytes(secret)
    files = {}
    for name in ("a.jpg", "b.jpg", "中文.jpg"):
        data = os.urandom(picture_bytes)
        (root / "2025" / "10" / "01" / name).write_bytes(data)
        files[f"{PREFIX}\\2025\\10\\01\\{name}"] = data
    (root / "ok.jpg").write_bytes(b"ok-picture")
    files[f"{PREFIX}\\ok.jpg"] = b"ok-picture"
    (root / "escape").symlink_to("../outside/secret.txt")
    (root / "abs_escape").symlink_to(outside / "secret.txt")
    (root / "dirlink").symlink_to("..")
    (root / "absdir").symlink_to(outside)
    (root / "evil_sibling").symlink_to("../pic_evil/secret.jpg")
    (root / "2025" / "deep_escape").symlink_to("../../outside/secret.txt")
    (root / "loop").symlink_to("loop")
    (root / "inside_link.jpg").symlink_to("2025/10/01/a.jpg")  # stays inside: served
    files[f"{PREFIX}\\inside_link.jpg"] = files[f"{PREFIX}\\2025\\10\\01\\a.jpg"]
    return Tree(root, outside, secret, files)


def client_paths(base: Path) -> list[str]:
    """Client paths that must all be refused (``base`` as given to :func:`build_tree`)."""
    return [
        r"D:\pic\..\secret.txt",
        r"D:\pic\..\outside\secret.txt",
        r"D:\pic\2025\..\..\outside\secret.txt",
        r"D:/pic/../outside/secret.txt",
        r"D:\pic\.\..\outside\secret.txt",
        r"D:\PIC\..\outside\secret.txt",
        r"d:\pic\2025\10\01\a.jpg\..\..\..\..\..\outside\secret.txt",
        r"D:\pic\escape",
        r"D:\pic\abs_escape",
        r"D:\pic\dirlink\outside\secret.txt",
        r"D:\pic\dirlink\secret.txt",
        r"D:\pic\absdir\secret.txt",
        r"D:\pic\evil_sibling",
        r"D:\pic\2025\deep_escape",
        r"D:\pic\loop",
        r"D:\pic_evil\secret.jpg",
        r"D:\pic..\outside\secret.txt",
        r"C:\pic\ok.jpg",
        r"\\host\share\pic\ok.jpg",
        r"\\?\D:\pic\ok.jpg",
        r"\\.\D:\pic\ok.jpg",
        "//host/share/pic/ok.jpg",
        str(base / "outside" / "secret.txt"),
        str(base / "pic" / "ok.jpg"),  # the root's real path is not a client prefix
        "/etc/passwd",
        r"pic\ok.jpg",
        r"..\outside\secret.txt",
        r"D:pic\ok.jpg",
        "D:\\pic\\ok.jpg\x00.txt",
        "D:\\pic\x00\\ok.jpg",
        "D:\\pic\\ok.jpg\n",
        r"D:\pic\ok.jpg:secret",
        r"D:\pic\C:\outside\secret.txt",
        "D:\\pic\\" + "a" * 300 + ".jpg",
        "D:\\pic\\" + "a\\" * 2100 + "ok.jpg",
        r"D:\pic\%2e%2e\outside\secret.txt",
        r"D:\pic\..%5coutside\secret.txt",
        r"D:\pic\2025",
        r"D:\pic",
        "D:\\",
        "",
        r"D:\pic\missing.jpg",
    ]


RAW_URL_TARGETS = [
    "/files/D:/pic/..%2foutside%2fsecret.txt",
    "/files/D:/pic/%2e%2e/outside/secret.txt",
    "/files/D:/pic/%2E%2E%5Coutside%5Csecret.txt",
    "/files/D:/pic/%252e%252e/outside/secret.txt",
    "/files/D:/pic/..%c0%afoutside/secret.txt",
    "/files/D:/pic/ok.jpg%00.txt",
    "/files/D:/pic/../outside/secret.txt",
    "/files/D:/pic/../../outside/secret.txt",
    "/files/../outside/secret.txt",
    "/files/%2Fetc%2Fpasswd",
    "/files//etc/passwd",
    "/files/etc/passwd",
    "/files/C:/pic/ok.jpg",
    "/files/%5C%5Chost%5Cshare%5Cok.jpg",
    "/files/D:%5Cpic%5C..%5Coutside%5Csecret.txt",
    "/files/D:/pic/escape",
    "/files/D:/pic/dirlink/outside/secret.txt",
    "/files/D%3A/pic_evil/secret.jpg",
    "/files/D:/pic/" + "a/" * 3000 + "ok.jpg",
]


def file_url_path(client_path: str) -> str:
    r"""The ``/files/`` URL path for a client path (what a client that knows ``D:\...`` sends)."""
    return "/files/" + urllib.parse.quote(client_path.replace("\\", "/").lstrip("/"), safe="/:")
