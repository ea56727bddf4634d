"""A hub that lies: a small HTTP server of the test's own on 127.0.0.1.

Each route is a function the test sets: ``hub.routes["/api/datasets"] =
catalog(...)``. Handlers get the request handler and write whatever a broken
or hostile hub would: endless bodies, no Content-Length, HTML, bombs.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[[BaseHTTPRequestHandler], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    routes: dict[str, Handler]
    served: dict[str, int]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        handler = self.server.routes.get(path)
        self.server.served[path] = self.server.served.get(path, 0) + 1
        if handler is None:
            body = b'{"error": "not found"}'
            self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        try:
            handler(self)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *_args: Any) -> None:
        pass


@contextmanager
def hostile_hub() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.routes, server.served = {}, {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def send(body: bytes, content_type: str = "application/json", length: bool = True,
         status: int = 200) -> Handler:
    def handler(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        if length:
            h.send_header("Content-Length", str(len(body)))
        else:
            h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body)
    return handler


def catalog(*entries: dict[str, Any]) -> Handler:
    return send(json.dumps({"datasets": list(entries)}).encode())


def endless(chunk: bytes = b"\0" * 65536, length: str | None = None,
            limit: int = 512 * 1024 * 1024) -> Handler:
    """An endless body (stops at ``limit`` so a broken client cannot fill the test disk)."""
    def handler(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/zip")
        if length is not None:
            h.send_header("Content-Length", length)
        h.send_header("Connection", "close")
        h.end_headers()
        sent = 0
        while sent < limit:
            h.wfile.write(chunk)
            sent += len(chunk)
    return handler


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def entry(name: str, package: bytes, last_updated: str = "2026-11-30T15:00:00+08:00",
          **overrides: Any) -> dict[str, Any]:
    """A catalog entry as our hub would send it for ``package`` (then ``overrides``)."""
    import hashlib

    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
    doc = {"name": name, "last_updated": last_updated, "file_count": len(infos),
           "total_size": sum(i.file_size for i in infos), "package_ready": True,
           "package_size": len(package), "sha256": hashlib.sha256(package).hexdigest(),
           "version": "20261130_150000"}
    doc.update(overrides)
    return doc
