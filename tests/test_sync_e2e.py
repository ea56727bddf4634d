"""`datahubsync datasets ...` end to end against a real `serve` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import (
    Hub,
    clean_env,
    cli_argv,
    client_config,
    http_answers,
    make_dataset,
    run_cli,
    tree_bytes,
    wait_until,
    write_yaml,
)


def _sync(cfg: Path, *args: str, expect: int = 0) -> dict:
    result = run_cli(["datasets", "sync", "--json", *args], config=cfg, expect=expect)
    return {d["name"]: d for d in json.loads(result.out)["datasets"]}


def _package_requests_now(hub: Hub) -> float:
    text = requests.get(f"{hub.url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith('datahubsync_http_requests_total{route="/package/{filename}"'):
            total += float(line.split()[-1])
    return total


def _package_requests(hub: Hub, settle: float = 0.5, timeout: float = 10) -> float:
    """Package requests summed over all workers, once the figure stops moving.

    Each worker publishes its counters every ``catalog_poll`` (0.1 s in tests),
    so a read straight after a download may miss it: read until two reads
    ``settle`` seconds apart agree.
    """
    deadline = time.monotonic() + timeout
    last = _package_requests_now(hub)
    while True:
        time.sleep(settle)
        current = _package_requests_now(hub)
        if current == last or time.monotonic() > deadline:
            return current
        last = current


def _touch_all(root: Path, row: bytes = b"2026-11-24,1,2,3\r\n") -> None:
    later = time.time() + 10
    for path in root.rglob("*.csv"):
        with open(path, "ab") as fh:
            fh.write(row)
        os.utime(path, (later, later))


def test_first_sync_then_no_change(tmp_path: Path, hub: Hub, data_root: Path) -> None:
    entries = {n: hub.wait_ready(n) for n in ("alpha", "beta")}
    cfg = client_config(tmp_path, hub.url, ["alpha", "beta"])
    first = _sync(cfg)
    for name in ("alpha", "beta"):
        assert first[name]["status"] == "installed"
        assert first[name]["bytes_downloaded"] == entries[name]["package_size"]
        assert tree_bytes(tmp_path / "local" / name) == tree_bytes(data_root / name)
    last_sync = json.loads((tmp_path / "clientstate" / ".last_sync.json").read_text())
    assert last_sync == {n: entries[n]["last_updated"] for n in ("alpha", "beta")}
    assert not list((tmp_path / "clientstate" / "downloads").glob("*.part"))

    before = _package_requests(hub)
    assert before == 2  # alpha and beta, once each
    second = _sync(cfg)
    assert {d["status"] for d in second.values()} == {"up_to_date"}
    assert all(d["bytes_downloaded"] == 0 for d in second.values())
    assert _package_requests(hub) == before  # no download at all


def test_hub_update_resync_and_rollback(tmp_path: Path, hub: Hub, data_root: Path) -> None:
    old = hub.wait_ready("alpha")
    cfg = client_config(tmp_path, hub.url, ["alpha"])
    _sync(cfg)
    version_a = tree_bytes(data_root / "alpha")
    _touch_all(data_root / "alpha")
    new = hub.wait_ready("alpha", newer_than=old["version"])
    result = _sync(cfg)["alpha"]
    assert result["status"] == "installed"
    assert result["remote_last_updated"] == new["last_updated"]
    assert tree_bytes(tmp_path / "local" / "alpha") == tree_bytes(data_root / "alpha")
    status = json.loads(run_cli(["datasets", "status", "--json"], config=cfg).out)
    assert status["datasets"][0]["previous"] == [old["last_updated"]]

    run_cli(["datasets", "rollback", "alpha"], config=cfg)
    assert tree_bytes(tmp_path / "local" / "alpha") == version_a
    assert _sync(cfg)["alpha"]["status"] == "skipped"  # not straight back to the bad version
    assert tree_bytes(tmp_path / "local" / "alpha") == version_a
    assert _sync(cfg, "--force")["alpha"]["status"] == "installed"
    assert tree_bytes(tmp_path / "local" / "alpha") == tree_bytes(data_root / "alpha")


def test_rollback_without_previous_is_clear_error(tmp_path: Path, hub: Hub) -> None:
    hub.wait_ready("alpha")
    cfg = client_config(tmp_path, hub.url, ["alpha"])
    _sync(cfg)
    result = run_cli(["datasets", "rollback", "alpha"], config=cfg, expect=1)
    assert "no previous version" in result.err


def test_one_failing_dataset_does_not_stop_others(tmp_path: Path, hub: Hub,
                                                  data_root: Path) -> None:
    hub.wait_ready("beta")
    cfg = client_config(tmp_path, hub.url, ["ghost", "beta"])
    result = _sync(cfg, expect=1)
    assert result["ghost"]["status"] == "failed"
    assert "does not offer" in result["ghost"]["message"]
    assert result["beta"]["status"] == "installed"
    assert tree_bytes(tmp_path / "local" / "beta") == tree_bytes(data_root / "beta")
    assert "ghost" not in json.loads((tmp_path / "clientstate" / ".last_sync.json").read_text())


def test_named_subset_and_unknown_name(tmp_path: Path, hub: Hub) -> None:
    hub.wait_ready("alpha")
    cfg = client_config(tmp_path, hub.url, ["alpha", "beta"])
    assert set(_sync(cfg, "alpha")) == {"alpha"}
    assert not (tmp_path / "local" / "beta").exists()
    result = run_cli(["datasets", "sync", "nosuch"], config=cfg, expect=2)
    assert "not configured: nosuch" in result.err


def test_dry_run_downloads_nothing(tmp_path: Path, hub: Hub) -> None:
    hub.wait_ready("alpha")
    cfg = client_config(tmp_path, hub.url, ["alpha"])
    before = _package_requests(hub)
    assert _sync(cfg, "--dry-run")["alpha"]["status"] == "would_install"
    assert not (tmp_path / "local" / "alpha").exists()
    assert _package_requests(hub) == before


def test_deleted_local_dir_is_reinstalled(tmp_path: Path, hub: Hub, data_root: Path) -> None:
    hub.wait_ready("alpha")
    cfg = client_config(tmp_path, hub.url, ["alpha"])
    _sync(cfg)
    import shutil

    shutil.rmtree(tmp_path / "local" / "alpha")
    assert _sync(cfg)["alpha"]["status"] == "installed"
    assert tree_bytes(tmp_path / "local" / "alpha") == tree_bytes(data_root / "alpha")


def test_overlay_mode_keeps_foreign_files(tmp_path: Path, hub: Hub, data_root: Path) -> None:
    hub.wait_ready("alpha")
    cfg = client_config(tmp_path, hub.url, ["alpha"])
    data = __import__("yaml").safe_load(cfg.read_text())
    data["datasets"][0]["mode"] = "overlay"
    write_yaml(cfg, data)
    local = tmp_path / "local" / "alpha"
    local.mkdir(parents=True)
    (local / "my_notes.txt").write_text("mine")
    _sync(cfg)
    assert (local / "my_notes.txt").read_text() == "mine"
    got = tree_bytes(local)
    got.pop("my_notes.txt")
    assert got == tree_bytes(data_root / "alpha")


def test_list_shows_hub_vs_local(tmp_path: Path, hub: Hub) -> None:
    entry = hub.wait_ready("alpha")
    hub.wait_ready("beta")
    cfg = client_config(tmp_path, hub.url, ["alpha", "beta"])
    _sync(cfg, "alpha")
    rows = {r["name"]: r for r in
            json.loads(run_cli(["datasets", "list", "--json"], config=cfg).out)["datasets"]}
    assert rows["alpha"]["state"] == "up to date"
    assert rows["alpha"]["remote_last_updated"] == entry["last_updated"]
    assert rows["beta"]["state"] == "not installed"
    text = run_cli(["datasets", "list"], config=cfg).out
    assert "alpha" in text and "up to date" in text


def test_doctor(tmp_path: Path, hub: Hub) -> None:
    cfg = client_config(tmp_path, hub.url, ["alpha"])
    ok = json.loads(run_cli(["doctor", "--json", "--min-free", "1"], config=cfg).out)
    assert ok["ok"] and any(c["name"] == "hub reachable" and c["ok"] for c in ok["checks"])
    down = client_config(tmp_path, "http://127.0.0.1:9", ["alpha"])
    result = run_cli(["doctor", "--min-free", "1"], config=down, expect=1)
    assert "FAIL  hub reachable" in result.out and "fix:" in result.out


class _StaticServer:
    """The published tree served by aiohttp's static route (Range, ETag) in a subprocess."""

    CODE = (
        "import sys\nfrom aiohttp import web\napp = web.Application()\n"
        "app.router.add_static('/', sys.argv[1])\n"
        "web.run_app(app, host='127.0.0.1', port=int(sys.argv[2]), print=None)\n"
    )

    def __init__(self, root: Path) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE, str(root),
                                      str(self.port)])
        wait_until(lambda: http_answers(f"{self.url}/health", timeout=1),
                   "the static server to answer", timeout=15)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def test_static_publish_then_sync(tmp_path: Path, data_root: Path) -> None:
    hub_cfg = write_yaml(tmp_path / "pub.yaml", {"serve": {"data_root": str(data_root)}})
    out = tmp_path / "site"
    published = json.loads(run_cli(["datasets", "publish", "--out", str(out), "--json"],
                                   config=hub_cfg).out)
    assert {d["name"] for d in published["datasets"]} == {"alpha", "beta"}
    assert json.loads((out / "health").read_text()) == {"status": "ok"}
    server = _StaticServer(out)
    try:
        cfg = client_config(tmp_path, server.url, ["alpha", "beta"])
        result = _sync(cfg)
        assert {d["status"] for d in result.values()} == {"installed"}
        for name in ("alpha", "beta"):
            assert tree_bytes(tmp_path / "local" / name) == tree_bytes(data_root / name)
        # republishing without changes builds nothing and the client stays up to date
        again = json.loads(run_cli(["datasets", "publish", "--out", str(out), "--json"],
                                   config=hub_cfg).out)
        assert set(again["decisions"].values()) == {"unchanged"}
        assert {d["status"] for d in _sync(cfg).values()} == {"up_to_date"}
        # a new trading day: publish, sync picks it up
        _touch_all(data_root / "alpha")
        run_cli(["datasets", "publish", "--out", str(out)], config=hub_cfg)
        assert _sync(cfg)["alpha"]["status"] == "installed"
        assert tree_bytes(tmp_path / "local" / "alpha") == tree_bytes(data_root / "alpha")
        # Range works on the static tree (resume relies on it)
        part = requests.get(f"{server.url}/package/alpha.zip", headers={"Range": "bytes=4-"},
                            timeout=5)
        assert part.status_code == 206
    finally:
        server.stop()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_static_tree_is_readable_as_the_umask_says(tmp_path: Path, umask: int) -> None:
    """Every file a web server serves from the tree (catalog, health, packages, manifests,
    deltas) gets the mode a new file gets under the publisher's umask: at 022 nginx's
    workers, another user, can read it (its manifests and catalog were 0600: 403)."""
    data_root = tmp_path / "pubdata"
    make_dataset(data_root / "alpha", files=12, rows=300)  # big enough to get a delta
    hub_cfg = write_yaml(tmp_path / "pub.yaml", {"serve": {"data_root": str(data_root)}})
    out = tmp_path / "site"
    for _ in range(2):  # the second publish also writes a delta
        subprocess.run([*cli_argv(), "--config", str(hub_cfg), "datasets", "publish", "--out",
                        str(out)], check=True, capture_output=True, env=clean_env(),
                       preexec_fn=lambda: os.umask(umask))
        _touch_all(data_root / "alpha", b"2026-11-24,10.00,10.20,9.90,10.10,123400\r\n")
    served = [p for p in out.rglob("*") if p.is_file()
              and not any(part.startswith(".") for part in p.relative_to(out).parts)]
    kinds = {p.relative_to(out).parts[0] for p in served}
    assert {"health", "api", "package", "manifest", "delta"} <= kinds, kinds
    assert {oct(p.stat().st_mode & 0o777) for p in served} == {oct(0o666 & ~umask)}


def test_sync_without_hub_url_is_config_error(tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", {"datasets": [{"name": "a", "local_dir": "x"}],
                                           "state_dir": str(tmp_path / "s")})
    result = run_cli(["datasets", "sync"], config=cfg, expect=2)
    assert "hub.url" in result.err


@pytest.mark.parametrize(("bad", "code"), [(b"not json", 75), (b'{"datasets": 3}', 2)],
                         ids=["broken-hub", "not-a-hub"])
def test_hub_answering_garbage_is_clear_error(tmp_path: Path, bad: bytes, code: int) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(bad)))
            self.end_headers()
            self.wfile.write(bad)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = client_config(tmp_path, f"http://127.0.0.1:{server.server_address[1]}", ["a"])
        result = run_cli(["datasets", "sync"], config=cfg, expect=code)
        assert "Traceback" not in result.err and "hub" in result.err
    finally:
        server.shutdown()



def test_progress_bar_on_a_terminal_log_lines_otherwise(tmp_path: Path, hub: Hub) -> None:
    import pty

    from tests.helpers import clean_env, cli_argv

    hub.wait_ready("alpha")
    cfg = client_config(tmp_path, hub.url, ["alpha"])
    quiet = run_cli(["datasets", "sync", "--force"], config=cfg)  # stderr is a pipe here
    assert "alpha: starting" in quiet.err and "alpha: done" in quiet.err
    assert "\r" not in quiet.err
    pid, fd = pty.fork()
    if pid == 0:  # child: stdout/stderr are the terminal
        env = clean_env({"COLUMNS": "100", "TERM": "xterm"})
        os.execvpe(cli_argv()[0], [*cli_argv(), "--config", str(cfg), "datasets", "sync",
                                   "--force"], env)
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, screen
    assert "alpha: starting" not in screen  # the bar replaces the log lines
    assert "━" in screen or "%" in screen  # rich's bar
