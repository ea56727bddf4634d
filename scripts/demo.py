"""Local demo: sample datasets, a real `serve` on a free port, `datasets sync` from it.

Run by `make demo`. Everything happens in a temporary directory that is
removed at the end (pass --keep to look around afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def make_sample(root: Path, files: int, seed: int) -> None:
    rng = random.Random(seed)
    header = "交易日期,股票代码,开盘价,最高价,最低价,收盘价,成交量\r\n".encode("gbk")
    for i in range(files):
        code = 600000 + i
        folder = root / ("沪市" if i % 2 else "深市") / f"{code}"
        folder.mkdir(parents=True, exist_ok=True)
        rows, price = [], 10 + rng.random() * 40
        for day in range(1, 241):
            price *= 1 + rng.uniform(-0.03, 0.03)
            rows.append(f"2026-{(day // 21) % 12 + 1:02d}-{day % 28 + 1:02d},{code},"
                        f"{price:.2f},{price * 1.02:.2f},{price * 0.98:.2f},{price:.2f},"
                        f"{rng.randint(1000, 900000)}\r\n")
        (folder / f"{code}.csv").write_bytes(header + "".join(rows).encode())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep the demo directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="datahubsync-demo-"))
    cli = [sys.executable, "-m", "datahubsync"]
    print(f"demo directory: {work}")
    make_sample(work / "hub-data" / "stock-trading-data-pro", 60, 1)
    make_sample(work / "hub-data" / "stock-etf-trading-data", 20, 2)
    (work / "hub.yaml").write_text(
        f"state_dir: {work / 'hub-state'}\n"
        f"serve: {{host: 127.0.0.1, port: 0, data_root: {work / 'hub-data'}, debounce: 0}}\n",
        encoding="utf-8")
    port_file = work / "hub.port"
    hub = subprocess.Popen(cli + ["--config", str(work / "hub.yaml"), "serve", "--port-file",
                                  str(port_file)])
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if hub.poll() is not None or time.monotonic() > deadline:
                print("the hub did not start", file=sys.stderr)
                return 1
            time.sleep(0.05)
        url = f"http://127.0.0.1:{int(port_file.read_text())}"
        while True:  # packages are built in the background right after start
            with urllib.request.urlopen(f"{url}/api/datasets", timeout=5) as response:
                offered = json.load(response)["datasets"]
            if offered and all(d["package_ready"] for d in offered):
                break
            time.sleep(0.1)
        print(f"\nhub {url} offers:")
        for d in offered:
            print(f"  {d['name']}: {d['file_count']} files, package {d['package_size']} bytes,"
                  f" data version {d['last_updated']}")
        (work / "client.yaml").write_text(
            f"state_dir: {work / 'client-state'}\nhub: {{url: '{url}'}}\ndatasets:\n"
            + "".join(f"  - {{name: {d['name']}, local_dir: {work / 'local' / d['name']}}}\n"
                      for d in offered), encoding="utf-8")
        client = cli + ["--config", str(work / "client.yaml")]
        print("\n$ datahubsync datasets sync", flush=True)
        first = subprocess.run(client + ["datasets", "sync"]).returncode
        print("\n$ datahubsync datasets sync   # again: nothing to do", flush=True)
        second = subprocess.run(client + ["datasets", "sync"]).returncode
        print("\n$ datahubsync datasets status", flush=True)
        subprocess.run(client + ["datasets", "status"])
        files = sum(1 for p in (work / "local").rglob("*") if p.is_file())
        print(f"\n{files} files installed under {work / 'local'}")
        return first or second
    finally:
        hub.terminate()
        hub.wait(30)
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
