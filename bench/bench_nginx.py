"""The nginx front-end (``serve nginx-config``) vs bare nginx vs ``serve`` alone, with wrk.

The same picture files (200 KB and 1 MB) are fetched three ways, on loopback,
from the page cache, with ``wrk -t2 -c16`` cycling through them (a Lua script):

- ``bare``: nginx with a plain ``alias`` of the root, no auth, no access log
  (nginx's best case);
- ``front``: nginx running the config our command generates (root mapping,
  confinement checks, ``disable_symlinks``, the token maps), bearer token on
  every request;
- ``serve``: ``datahubsync serve`` alone (``workers: 2``), bearer token.

Both nginx run ``worker_processes 2``, ``sendfile on``, no access log. Runs
alternate between the three, the order rotating every round; medians of
requests/s are compared. Goal: front ≥ 0.9× bare at both sizes. The client and
the servers share the machine's cores, so these are ratios, not capacities.

    apt-get install -y nginx-light wrk
    .venv/bin/python bench/bench_nginx.py [--files 200] [--seconds 10] [--rounds 3]

Prints a table and writes bench/out/nginx.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from bench_pictures_serve import (  # noqa: E402 - after the path set-up
    TOKEN,
    free_port,
    make_files,
    start_ours,
    wait_port,
)

GOAL = 0.9  # front >= GOAL x bare
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def write_nginx_conf(work: Path, name: str, http_body: str) -> Path:
    """``work/NAME.conf``: a main nginx config around ``http_body``, its temp paths in
    ``work`` (nginx runs as this user, not root, on a free port)."""
    tmp = work / f"{name}_tmp"
    tmp.mkdir(exist_ok=True)
    conf = work / f"{name}.conf"
    temps = "".join(f"    {kind}_temp_path {tmp};\n"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(f"""
worker_processes 2;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 100000;
{temps}{http_body}
}}
""")
    return conf


def run_nginx(work: Path, name: str, conf: Path, port: int) -> subprocess.Popen[bytes]:
    """nginx in the foreground with ``conf``, once it listens on ``port``."""
    proc = subprocess.Popen(
        [NGINX, "-p", str(work), "-c", str(conf), "-g",
         f"daemon off; pid {work / (name + '.pid')}; error_log {work / (name + '_error.log')};"],
        stderr=open(work / f"{name}.log", "ab"))
    wait_port(port)
    return proc


def start_bare(work: Path, root: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = write_nginx_conf(work, "bare", f"""
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port};
        location /files/D:/pic/ {{ alias {root}/; }}
    }}""")
    return run_nginx(work, "bare", conf, port), port


def start_front(work: Path, serve_port: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    out = work / "front_out"
    subprocess.run([sys.executable, "-m", "datahubsync", "--config", str(work / "serve.yaml"),
                    "serve", "nginx-config", "--out", str(out), "--listen",
                    f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{serve_port}"],
                   cwd=REPO, check=True, capture_output=True)
    conf = write_nginx_conf(work, "front", f"    include {out / 'datahubsync.conf'};")
    return run_nginx(work, "front", conf, port), port


def wrk(port: int, paths: list[str], seconds: int, auth: bool, work: Path) -> float:
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
    if re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"wrk saw errors on port {port}:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{out}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200, help="files per size")
    parser.add_argument("--seconds", type=int, default=10, help="wrk -d per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "out" / "nginx.json")
    args = parser.parse_args()
    for tool in ("wrk",):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install -y nginx-light wrk")
    if not Path(NGINX).exists():
        raise SystemExit("nginx not found: apt-get install -y nginx-light wrk")
    work = Path(tempfile.mkdtemp(prefix="dhs-nginx-"))
    work.chmod(0o755)  # nginx workers run as nobody
    root = work / "pic"
    paths = make_files(root, args.files)
    for f in root.rglob("*.jpg"):
        f.read_bytes()  # warm the page cache
    procs: list[tuple[subprocess.Popen[bytes], int]] = []
    results: dict[str, dict[str, list[float]]] = {}
    try:
        serve, serve_port = start_ours(work, root)
        procs.append((serve, signal.SIGTERM))
        bare, bare_port = start_bare(work, root)
        procs.append((bare, signal.SIGQUIT))
        front, front_port = start_front(work, serve_port)
        procs.append((front, signal.SIGQUIT))
        servers = [("bare", bare_port, False), ("front", front_port, True),
                   ("serve", serve_port, True)]
        for label, files in paths.items():
            for _name, port, auth in servers:  # warm-up, and every answer must be a 200
                wrk(port, files, 2, auth, work)
            runs: dict[str, list[float]] = {name: [] for name, _, _ in servers}
            for n in range(args.rounds):
                order = servers[n % 3:] + servers[:n % 3]
                for name, port, auth in order:
                    runs[name].append(wrk(port, files, args.seconds, auth, work))
            results[label] = runs
    finally:
        for proc, sig in procs:
            proc.send_signal(sig)
        for proc, _ in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    report: dict[str, object] = {"files_per_size": args.files, "seconds": args.seconds,
                                 "rounds": args.rounds, "wrk": "-t2 -c16", "goal": GOAL,
                                 "sizes": {}}
    print(f"{'size':6} {'bare req/s':>11} {'front req/s':>12} {'serve req/s':>12} "
          f"{'front/bare':>11} {'serve/bare':>11} {'front/serve':>12} {'goal':>5}")
    met = True
    for label, runs in results.items():
        bare_rps, front_rps, serve_rps = (statistics.median(runs[k])
                                          for k in ("bare", "front", "serve"))
        ratio = front_rps / bare_rps
        met &= ratio >= GOAL
        report["sizes"][label] = {  # type: ignore[index]
            "bare_rps": runs["bare"], "front_rps": runs["front"], "serve_rps": runs["serve"],
            "front_over_bare": round(ratio, 3), "serve_over_bare": round(serve_rps / bare_rps, 3),
            "front_over_serve": round(front_rps / serve_rps, 3)}
        print(f"{label:6} {bare_rps:11.0f} {front_rps:12.0f} {serve_rps:12.0f} "
              f"{ratio:11.2f} {serve_rps / bare_rps:11.2f} {front_rps / serve_rps:12.2f} "
              f"{GOAL:5.2f}")
    print(f"goal front >= {GOAL}x bare at every size: {'met' if met else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
