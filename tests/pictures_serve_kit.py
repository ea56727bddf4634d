"""A real ``serve`` with picture roots and the legacy TCP listener, on a traversal tree."""

from __future__ import annotations

import re
import socket
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import Hub, free_port, wait_until
from tests.traversal_corpus import PREFIX, Tree, build_tree

TOKEN = "picture-token-0123456789"


@dataclass
class PictureHub:
    hub: Hub
    tree: Tree
    tcp_port: int

    @property
    def url(self) -> str:
        return self.hub.url

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            return response.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Summed over all workers (any worker answers /metrics)."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        pattern = "^" + re.escape(f"{name}{{{wanted}}}" if wanted else name) + r" (\S+)$"
        found = re.search(pattern, self.metrics(), re.M)
        return float(found.group(1)) if found else 0.0

    def wait_metric(self, name: str, at_least: float, timeout: float = 10,
                    **labels: str) -> float:
        """The metric once it is at least ``at_least``; after ``timeout`` seconds, what it
        is then (the caller's assertion says what it was)."""
        value = 0.0

        def reached() -> bool:
            nonlocal value
            value = self.metric(name, **labels)
            return value >= at_least

        wait_until(reached, f"{name} to reach {at_least}", timeout=timeout, interval=0.1,
                   fail=False)
        return value

    def unread_until_dropped(self, request: bytes) -> int:
        """Send ``request`` and read nothing: serve must drop the connection after
        serve.send_timeout, counted once as such. Returns the bytes that were in the
        buffers by then."""
        port = int(self.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(request)
            dropped = self.wait_metric("datahubsync_pictures_errors_total", 1, timeout=60,
                                       transport="http", reason="send_timeout")
            assert dropped == 1
            received = 0
            while chunk := sock.recv(1024 * 1024):  # what was in the buffers, then EOF
                received += len(chunk)
        assert self.metric("datahubsync_pictures_errors_total", transport="http",
                           reason="client_gone") == 0  # counted once, as send_timeout
        return received


def start_picture_hub(tmp: Path, legacy: dict[str, Any] | None = None,
                      picture_bytes: int = 4096, **serve: Any) -> PictureHub:
    tree = build_tree(tmp / "tree", picture_bytes)
    (tmp / "data").mkdir(exist_ok=True)
    port = free_port()
    settings: dict[str, Any] = {
        "api_tokens": [TOKEN],
        "picture_roots": [{"prefix": PREFIX, "path": str(tree.root)}],
        "legacy_tcp": {"host": "127.0.0.1", "port": port, "read_timeout": 2,
                       "idle_timeout": 2, **(legacy or {})},
    }
    settings.update(serve)
    hub = Hub(tmp, tmp / "data", **settings).start()
    return PictureHub(hub, tree, port)
