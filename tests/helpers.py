"""Test helpers: run the CLI as a real subprocess, start a real hub, make datasets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


_HANDED_OUT: set[int] = set()  # ports free_port gave this session (their servers may be starting)


def _ephemeral_floor() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port nothing listens on right now, for a server a test starts on it.

    Taken below the kernel's ephemeral range: a port from ``bind(0)`` is one the next
    outgoing connection of any test may take as its local port before the server binds
    it ("Address already in use"). Not one handed out before in this session either.
    """
    import random

    floor = _ephemeral_floor()
    low = 10000 if floor > 11000 else 1024
    for _ in range(1000):
        port = random.randrange(low, floor)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free TCP port in {low}-{floor}")


def cli_argv() -> list[str]:
    """How to start datahubsync: the frozen binary when DATAHUBSYNC_BIN is set."""
    binary = os.environ.get("DATAHUBSYNC_BIN")
    return [binary] if binary else [sys.executable, "-m", "datahubsync"]


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAHUBSYNC_")
           or k == "DATAHUBSYNC_BIN"}
    env.pop("NOTIFY_SOCKET", None)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def run_cli(args: Sequence[str], *, config: Path | None = None, expect: int | None = 0,
            env: dict[str, str] | None = None, timeout: float = 120,
            cwd: Path | None = None) -> Result:
    argv = cli_argv() + (["--config", str(config)] if config else []) + list(args)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=clean_env(env), cwd=cwd)
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if expect is not None and proc.returncode != expect:
        raise AssertionError(f"exit {proc.returncode} (wanted {expect}) for {argv}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return result


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def make_dataset(root: Path, files: int = 5, rows: int = 20, seed: int = 0) -> dict[str, bytes]:
    """Stock-like CSV files (GBK header, CRLF), some under a Chinese-named folder."""
    root.mkdir(parents=True, exist_ok=True)
    written: dict[str, bytes] = {}
    for i in range(files):
        folder = "沪市" if i % 2 else "sz"
        rel = f"{folder}/{600000 + i + seed}.csv"
        lines = ["交易日期,开盘价,收盘价,成交量".encode("gbk")]
        for r in range(rows):
            lines.append(f"2026-01-{(r % 28) + 1:02d},{10 + i + r / 100:.2f},"
                         f"{10.5 + i:.2f},{1000 * (r + seed + 1)}".encode())
        data = b"\r\n".join(lines) + b"\r\n"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written[rel] = data
    return written


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


class Hub:
    """A real ``datahubsync serve`` subprocess on 127.0.0.1, port chosen by the OS."""

    def __init__(self, tmp: Path, data_root: Path, config_extra: dict[str, Any] | None = None,
                 **serve: Any) -> None:
        """``serve`` keys go to the serve section; ``config_extra`` adds other sections."""
        self.tmp = tmp
        self.port_file = tmp / "hub.port"
        self.log = tmp / "hub.log"
        settings = {"host": "127.0.0.1", "port": 0, "data_root": str(data_root),
                    "debounce": 0, "check_interval": 0.2, "catalog_poll": 0.1}
        settings.update(serve)
        self.config = write_yaml(tmp / "hub.yaml", {"state_dir": str(tmp / "hubstate"),
                                                    "serve": settings, **(config_extra or {})})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> Hub:
        self.port_file.unlink(missing_ok=True)
        self.proc = proc = subprocess.Popen(
            cli_argv() + ["--config", str(self.config), "serve", "--port-file",
                          str(self.port_file)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), env=clean_env(env))
        wait_until(lambda: self.port_file.exists() or proc.poll() is not None,
                   "the hub to start", timeout=30, detail=self.log.read_text)
        if not self.port_file.exists():
            raise AssertionError(f"hub did not start:\n{self.log.read_text()}")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{int(self.port_file.read_text())}"

    def datasets(self) -> dict[str, Any]:
        status, doc = call_json(f"{self.url}/api/datasets", timeout=10)
        assert status == 200, doc
        return {d["name"]: d for d in doc["datasets"]}

    def wait_ready(self, name: str, newer_than: str | None = None,
                   timeout: float = 30) -> dict[str, Any]:
        """Wait until ``name`` has a package (with a version other than ``newer_than``)."""

        def ready() -> dict[str, Any] | None:
            entry = self.datasets().get(name)
            if entry and entry["package_ready"] and entry["version"] != newer_than:
                return entry
            return None

        return wait_until(ready, f"a package for {name}", timeout=timeout,
                          detail=self.log.read_text)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def client_config(tmp: Path, hub_url: str, names: Sequence[str], **extra: Any) -> Path:
    data: dict[str, Any] = {
        "state_dir": str(tmp / "clientstate"),
        "hub": {"url": hub_url, "timeout": 20, "connect_timeout": 5, "retries": 3},
        "datasets": [{"name": n, "local_dir": str(tmp / "local" / n)} for n in names],
        "sync": {"fsync": False},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    return write_yaml(tmp / "client.yaml", data)


def call_json(url: str, method: str = "GET", body: Any = None, *,
              headers: dict[str, str] | None = None, raw: bytes | None = None,
              token: str | None = None, timeout: float = 30,
              text: bool = False) -> tuple[int, Any]:
    """One HTTP request with a JSON (or ``raw``) body; returns (status, decoded JSON or None).

    Error statuses are returned, not raised, so a test asserts on them like on a 200.
    A body that is not JSON comes back as text; ``text=True`` returns every body as text
    (for an endpoint that answers in words, ``success``, or in JSON on errors).
    """
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, payload = exc.code, exc.read()
    if text:
        return status, payload.decode("utf-8", "replace")
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, payload.decode("utf-8", "replace")


def raw_http(port: int, request: bytes, timeout: float = 30) -> bytes:
    """Send ``request`` bytes on a fresh connection; everything the server answers."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def http_answers(url: str, timeout: float = 1) -> bool:
    """Whether a server accepts the connection and answers a GET of ``url`` (any status);
    False when the connection is refused. A server that accepts but never answers fails."""
    import requests

    try:
        requests.get(url, timeout=timeout)
    except requests.ConnectionError:
        return False
    return True


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 60,
               interval: float = 0.05, *, detail: Callable[[], str] | None = None,
               fail: bool = True) -> Any:
    """Poll ``predicate`` until it returns something true (and return that); fail after
    ``timeout`` seconds. The bound is for a hung test, not a measure of speed.

    ``detail`` is called on failure and its text added to the message (a server's log);
    with ``fail=False`` the last (false) answer is returned after ``timeout`` instead,
    for a bounded wait whose caller carries on or asserts on what it found.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            if not fail:
                return value
            message = f"timed out after {timeout:g} s waiting for {what}"
            raise AssertionError(f"{message}:\n{detail()}" if detail else message)
        time.sleep(interval)


def serve_connections(server: socket.socket, handle: Callable[[socket.socket], None],
                      threaded: bool = False) -> None:
    """A daemon thread hands each connection ``server`` accepts to ``handle`` (each in a
    thread of its own when ``threaded``), until the listener is closed: the accept loop
    of the tests' canned TCP and HTTP servers."""

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            if threaded:
                threading.Thread(target=handle, args=(conn,), daemon=True).start()
            else:
                handle(conn)

    threading.Thread(target=accept, daemon=True).start()
