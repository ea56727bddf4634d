"""Picture serving: ``datahubsync serve``'s ``/files`` route vs nginx, with wrk, on loopback.

Both serve the same files (200 KB and 1 MB JPEG-sized blobs in the seed's
``YYYY/MM/DD`` shape) from the page cache. wrk cycles through the files with a
Lua script (``-t2 -c16``, DESIGN.md's setting). Ours runs with ``workers: 2``
(one per core, the default) and a bearer token on every request; nginx runs
``worker_processes 2``, ``sendfile on``, no auth and no access log (its best
case). Runs alternate nginx/ours, the order flipping every round; medians of
requests/s are compared. Peak RSS: VmHWM of each serve process after the runs
(the largest, and the sum over parent + workers).

DESIGN.md targets: 1 MB ≥ 0.8× nginx, 200 KB ≥ 0.35× nginx. The client and
the servers share the 2 cores, so these are ratios, not capacities.

    apt-get install -y nginx wrk
    .venv/bin/python bench/bench_pictures_serve.py [--files 200] [--seconds 8] [--rounds 3]

Prints a table and writes bench/out/pictures_serve.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOKEN = "bench-token"
SIZES = {"200KB": 200 * 1024, "1MB": 1024 * 1024}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_files(root: Path, count: int) -> dict[str, list[str]]:
    """``count`` files per size; returns the URL paths below the prefix, per size."""
    paths: dict[str, list[str]] = {}
    for label, size in SIZES.items():
        paths[label] = []
        for n in range(count):
            rel = f"2025/10/{1 + n % 28:02d}/{label}_{n:05d}.jpg"
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(os.urandom(size))
            paths[label].append(rel)
    return paths


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start_ours(work: Path, root: Path) -> tuple[subprocess.Popen[bytes], int]:
    (work / "data").mkdir(exist_ok=True)
    cfg = work / "serve.yaml"
    cfg.write_text(json.dumps({
        "state_dir": str(work / "state"),
        "serve": {"host": "127.0.0.1", "port": 0, "data_root": str(work / "data"),
                  "workers": 2, "check_interval": 600, "api_tokens": [TOKEN],
                  "picture_roots": [{"prefix": "D:\\pic", "path": str(root)}]},
        "logging": {"level": "WARNING"},
    }))
    port_file = work / "serve.port"
    port_file.unlink(missing_ok=True)  # a run before in the same work dir left its port
    proc = subprocess.Popen([sys.executable, "-m", "datahubsync", "--config", str(cfg), "serve",
                             "--port-file", str(port_file)], cwd=REPO,
                            stderr=open(work / "serve.log", "ab"))
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((work / "serve.log").read_text())
            time.sleep(0.05)
        port = int(port_file.read_text())
        wait_port(port)
    except BaseException:  # a serve that never answered is not left running
        proc.terminate()
        proc.wait()
        raise
    return proc, port


def start_nginx(work: Path, root: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 2;
pid {work}/nginx.pid;
error_log {work}/nginx_error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {work}/nginx_tmp;
    proxy_temp_path {work}/nginx_tmp;
    fastcgi_temp_path {work}/nginx_tmp;
    uwsgi_temp_path {work}/nginx_tmp;
    scgi_temp_path {work}/nginx_tmp;
    server {{
        listen 127.0.0.1:{port};
        location /files/D:/pic/ {{ alias {root}/; }}
    }}
}}
""")
    (work / "nginx_tmp").mkdir(exist_ok=True)
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)],
                            stderr=open(work / "nginx.log", "ab"))
    wait_port(port)
    return proc, port


def wrk(port: int, paths: list[str], seconds: int, auth: bool, work: Path) -> dict[str, float]:
    script = work / "paths.lua"
    listed = ",\n".join(f'"/files/D:/pic/{p}"' for p in paths)
    script.write_text(f"""
local paths = {{ {listed} }}
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, paths[(i % #paths) + 1])
end
""")
    argv = ["wrk", "-t2", "-c16", f"-d{seconds}s", "-s", str(script)]
    if auth:
        argv += ["-H", f"Authorization: Bearer {TOKEN}"]
    out = subprocess.run(argv + [f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return {"rps": rps}


def tree_pids(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == current:
                    todo.append(int(entry.name))
    return found


def peak_rss_kib(pid: int) -> list[int]:
    values = []
    for p in tree_pids(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        values.append(int(re.search(r"VmHWM:\s+(\d+)", status).group(1)))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200, help="files per size")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "pictures_serve.json")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install -y nginx wrk")
    work = Path(tempfile.mkdtemp(prefix="dhs-pics-"))
    work.chmod(0o755)  # nginx workers run as nobody
    root = work / "pic"
    paths = make_files(root, args.files)
    for f in root.rglob("*.jpg"):
        f.read_bytes()  # warm the page cache
    ours, ours_port = start_ours(work, root)
    nginx, nginx_port = start_nginx(work, root)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for label, files in paths.items():
            # warm-up: both servers, a short run each
            wrk(ours_port, files, 2, True, work)
            wrk(nginx_port, files, 2, False, work)
            runs: dict[str, list[float]] = {"ours": [], "nginx": []}
            for n in range(args.rounds):
                order = [("nginx", nginx_port, False), ("ours", ours_port, True)]
                for name, port, auth in order if n % 2 == 0 else order[::-1]:
                    runs[name].append(wrk(port, files, args.seconds, auth, work)["rps"])
            results[label] = runs
        rss = peak_rss_kib(ours.pid)
    finally:
        ours.send_signal(signal.SIGTERM)
        nginx.send_signal(signal.SIGQUIT)
        ours.wait(30)
        nginx.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    report: dict[str, object] = {"files_per_size": args.files, "seconds": args.seconds,
                                 "rounds": args.rounds, "wrk": "-t2 -c16",
                                 "serve_workers": 2, "serve_peak_rss_kib": rss, "sizes": {}}
    targets = {"200KB": 0.35, "1MB": 0.8}
    print(f"{'size':6} {'ours req/s':>11} {'nginx req/s':>12} {'ours MB/s':>10} "
          f"{'nginx MB/s':>11} {'ratio':>6} {'target':>7}")
    for label, runs in results.items():
        ours_rps, nginx_rps = statistics.median(runs["ours"]), statistics.median(runs["nginx"])
        ratio = ours_rps / nginx_rps
        mb = SIZES[label] / 1e6
        report["sizes"][label] = {"ours_rps": runs["ours"], "nginx_rps": runs["nginx"],  # type: ignore[index]
                                  "ratio": round(ratio, 3), "target": targets[label]}
        print(f"{label:6} {ours_rps:11.0f} {nginx_rps:12.0f} {ours_rps * mb:10.0f} "
              f"{nginx_rps * mb:11.0f} {ratio:6.2f} {targets[label]:7.2f}")
    print(f"serve peak RSS (KiB, per process): {rss}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
