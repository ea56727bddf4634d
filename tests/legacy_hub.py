"""An in-process fake of the EXISTING production dataset hub (DESIGN.md, "Compatibility contracts").

What it reproduces, on purpose, of the old hub:

- ``GET /health`` → ``{"status": "ok"}``;
- ``GET /api/datasets`` → ``{"datasets": [...]}`` with the old keys only
  (``name``, ``last_updated`` as a NAIVE local time string, ``file_count``,
  ``total_size``, ``package_ready``, ``package_size``) plus its extra
  ``freshness`` and ``status`` — no ``sha256``/``etag``/``version`` unless a
  test passes them as overrides (which may lie);
- ``GET /package/{name}.zip`` → 200 with the whole body; ``Range: bytes=a-`` or
  ``a-b`` → 206 with ``Content-Range``; a start past the end → 416; unknown
  dataset → 404 ``{"error": "Package not found"}``;
- no ``ETag``, no ``Last-Modified``, ``If-Range`` ignored, no ``HEAD`` (501);
- HTTP/1.0, one connection per request.

The test controls what is served with :meth:`LegacyHub.set_package` and reads
what was asked with :attr:`LegacyHub.requests` / :meth:`LegacyHub.package_requests`.
"""

from __future__ import annotations

import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Served:
    """One dataset as the fake hub offers it."""

    body: bytes
    entry: dict[str, Any]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class LegacyHub:
    """The old hub, on 127.0.0.1 and an OS-chosen port, in a background thread."""

    content_type: str = "application/json"
    send_length: bool = True  # False: no Content-Length, the body ends when the connection closes
    datasets: dict[str, Served] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # -- what the test controls ------------------------------------------------------------
    def set_package(self, name: str, zip_bytes: bytes, last_updated: str | None,
                    **overrides: Any) -> dict[str, Any]:
        """Serve ``zip_bytes`` as ``name``; ``overrides`` replace (or add) catalog keys."""
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
        entry: dict[str, Any] = {
            "name": name,
            "last_updated": last_updated,
            "file_count": len(infos),
            "total_size": sum(i.file_size for i in infos),
            "package_ready": True,
            "package_size": len(zip_bytes),
            "freshness": 0.97,
            "status": "ready",
        }
        entry.update(overrides)
        with self._lock:
            self.datasets[name] = Served(zip_bytes, entry)
        return entry

    def remove(self, name: str) -> None:
        with self._lock:
            self.datasets.pop(name, None)

    def package_requests(self, name: str | None = None) -> list[Request]:
        """The GET requests for packages (of ``name``) received so far."""
        prefix = f"/package/{name}.zip" if name else "/package/"
        with self._lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    # -- server lifecycle -----------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "hub not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> LegacyHub:
        hub = self

        class Handler(_Handler):
            owner = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="legacy-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LegacyHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler ---------------------------------------------------------------------
    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _document(self) -> dict[str, Any]:
        with self._lock:
            return {"datasets": [dict(s.entry) for s in self.datasets.values()]}

    def _body(self, name: str) -> bytes | None:
        with self._lock:
            served = self.datasets.get(name)
            return served.body if served else None


class _Handler(BaseHTTPRequestHandler):
    owner: LegacyHub
    protocol_version = "HTTP/1.0"
    server_version = "Werkzeug/0.16.0"  # whatever; the point is: not ours

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    # No do_HEAD: BaseHTTPRequestHandler answers 501 "Unsupported method".

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        record = Request("GET", self.path, {k: v for k, v in self.headers.items()})
        self.owner._record(record)
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._json(record, 200, {"status": "ok"})
        elif path == "/api/datasets":
            self._json(record, 200, self.owner._document())
        elif path.startswith("/package/") and path.endswith(".zip"):
            self._package(record, path[len("/package/"):-len(".zip")])
        else:
            self._json(record, 404, {"error": "Not found"})

    def _json(self, record: Request, status: int, document: Any) -> None:
        self._send(record, status, json.dumps(document).encode(), self.owner.content_type)

    def _send(self, record: Request, status: int, body: bytes, ctype: str,
              extra: dict[str, str] | None = None) -> None:
        record.status = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        if self.owner.send_length or ctype != "application/zip":
            self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _package(self, record: Request, name: str) -> None:
        body = self.owner._body(name)
        if body is None:
            self._json(record, 404, {"error": "Package not found"})
            return
        total = len(body)
        wanted = self.headers.get("Range")  # If-Range is ignored, like the old hub
        match = _RANGE.match(wanted.strip()) if wanted else None
        if match is None:
            self._send(record, 200, body, "application/zip")
            return
        start = int(match.group(1))
        end = int(match.group(2)) if match.group(2) else total - 1
        if start >= total:
            self._send(record, 416, b"", "application/zip",
                       {"Content-Range": f"bytes */{total}"})
            return
        end = min(end, total - 1)
        self._send(record, 206, body[start:end + 1], "application/zip",
                   {"Content-Range": f"bytes {start}-{end}/{total}"})


@contextmanager
def legacy_hub(**options: Any) -> Iterator[LegacyHub]:
    hub = LegacyHub(**options)
    with hub:
        yield hub


def zip_tree(files: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A package like the old hub's: deflate, file entries only, UTF-8 names."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for rel, data in sorted(files.items()):
            zf.writestr(rel, data)
    return buffer.getvalue()
