"""The seed's picture transfer, rebuilt from its description, for benchmarks only.

Protocol (DESIGN.md), one request per connection: the client sends a 4-byte
big-endian length and the UTF-8 path; the server answers a 4-byte big-endian
name length, the name, an 8-byte big-endian size and the bytes; name length 0
with size 0 is the error answer.

``SerialServer`` works like the old ``server.py``: one thread, accept, read the
path, send the file, close, next connection. It has no root confinement (the
seed had none either): ``translate`` maps the requested path to a local one,
so never point it at anything but benchmark data. ``fetch_serial`` is the old
client's loop: one connection per file, one file after another, skipping files
that already exist with the right size.

    python bench/seed_protocol.py serve --port 5000 --prefix 'D:\\pic' --root /tmp/pic
    python bench/seed_protocol.py get --port 5000 'D:\\pic\\a.jpg' out.jpg
"""

from __future__ import annotations

import argparse
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

_LEN = struct.Struct(">I")
_SIZE = struct.Struct(">Q")
ERROR = _LEN.pack(0) + _SIZE.pack(0)


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    buf = bytearray()
    while len(buf) < count:
        chunk = sock.recv(min(count - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {count} bytes")
        buf += chunk
    return bytes(buf)


def prefix_translator(prefix: str, root: Path) -> Callable[[str], Path]:
    """``D:\\pic\\a\\b.jpg`` → ``root/a/b.jpg`` (prefix compared case-insensitively)."""
    norm = prefix.replace("\\", "/").rstrip("/").lower()

    def translate(path: str) -> Path:
        unified = path.replace("\\", "/")
        if not unified.lower().startswith(norm + "/"):
            raise FileNotFoundError(path)
        return root / unified[len(norm) + 1:]

    return translate


class SerialServer:
    """The seed's server: one connection at a time, in one thread."""

    def __init__(self, translate: Callable[[str], Path], host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.translate = translate
        self.sock = socket.create_server((host, port), backlog=128)
        self.port = self.sock.getsockname()[1]
        self._thread: threading.Thread | None = None

    def serve_one(self, conn: socket.socket) -> None:
        with conn:
            try:
                (length,) = _LEN.unpack(_recv_exactly(conn, 4))
                path = _recv_exactly(conn, length).decode("utf-8")
                local = self.translate(path)
                with open(local, "rb") as fh:
                    size = os.fstat(fh.fileno()).st_size
                    name = os.path.basename(path.replace("\\", "/")).encode("utf-8")
                    conn.sendall(_LEN.pack(len(name)) + name + _SIZE.pack(size))
                    conn.sendfile(fh)
            except (OSError, UnicodeDecodeError, struct.error):
                try:
                    conn.sendall(ERROR)
                except OSError:
                    pass

    def serve_forever(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.serve_one(conn)

    def start(self) -> SerialServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.sock.close()


def fetch_one(host: str, port: int, path: str, timeout: float = 60) -> tuple[str, bytes] | None:
    """One file on one connection; None for the error answer."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        data = path.encode("utf-8")
        sock.sendall(_LEN.pack(len(data)) + data)
        (name_len,) = _LEN.unpack(_recv_exactly(sock, 4))
        name = _recv_exactly(sock, name_len).decode("utf-8")
        (size,) = _SIZE.unpack(_recv_exactly(sock, 8))
        if name_len == 0 and size == 0:
            return None
        return name, _recv_exactly(sock, size)


def local_path(local_root: Path, server_path: str) -> Path:
    """The seed client's mirror path: drive and leading separators dropped."""
    unified = server_path.replace("\\", "/")
    if len(unified) >= 2 and unified[1] == ":":
        unified = unified[2:]
    return local_root / unified.lstrip("/")


def fetch_serial(host: str, port: int, paths: Iterable[str], local_root: Path) -> dict[str, int]:
    """The old client's loop; returns counts of downloaded, skipped and missing files."""
    counts = {"downloaded": 0, "skipped": 0, "missing": 0}
    for path in paths:
        target = local_path(local_root, path)
        answer = fetch_one(host, port, path)
        if answer is None:
            counts["missing"] += 1
            continue
        if target.exists() and target.stat().st_size == len(answer[1]):
            counts["skipped"] += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(answer[1])
        counts["downloaded"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=5000)
    serve.add_argument("--prefix", required=True)
    serve.add_argument("--root", type=Path, required=True)
    get = sub.add_parser("get")
    get.add_argument("--host", default="127.0.0.1")
    get.add_argument("--port", type=int, default=5000)
    get.add_argument("path")
    get.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.cmd == "serve":
        server = SerialServer(prefix_translator(args.prefix, args.root), args.host, args.port)
        print(f"serial seed-style server on {args.host}:{server.port}", flush=True)
        server.serve_forever()
    else:
        answer = fetch_one(args.host, args.port, args.path)
        if answer is None:
            raise SystemExit("error answer (missing or unreadable)")
        args.out.write_bytes(answer[1])


if __name__ == "__main__":
    main()
