"""Random-timing kill -9 soak, one per long command (not part of the test suite).

The test suite kills at named crash points (``DATAHUBSYNC_CRASH_AT``), which
proves each step on any machine. This script adds what a schedule cannot: kills
at random moments, many times, to find a step nobody named. Each round starts
the command, kills it after a random delay, and checks the invariant:

- ``datasets``: a delta install of 600 files; after every kill ``local_dir`` is
  the old or the new tree, and a last run ends with exactly the new one;
- ``logs``: 20 hourly files; every address reaches the server exactly once;
- ``pictures``: 80 tasks; every picture ends in the mirror byte for byte.

    python bench/soak_kill9.py [--command datasets|logs|pictures|all] [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.helpers import (  # noqa: E402
    Hub,
    clean_env,
    cli_argv,
    client_config,
    make_dataset,
    run_cli,
    tree_bytes,
    write_yaml,
)
from tests.pictures_client_kit import (  # noqa: E402
    check_mirror,
    make_pictures,
    sqlite_tasks,
    start_server,
)
from tests.pictures_client_kit import client_config as pictures_config  # noqa: E402
from tests.test_logs_client import line, public_ips, write_log  # noqa: E402
from tests.test_sync_e2e import _touch_all  # noqa: E402


def kill_after(argv: list[str], delay: float) -> bool:
    """Run ``argv``; SIGKILL it after ``delay`` s. Returns whether it was killed."""
    proc = subprocess.Popen(argv, env=clean_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def soak_datasets(tmp: Path, rounds: int, rng: random.Random) -> str:
    data = tmp / "data"
    make_dataset(data / "alpha", files=600, rows=50, seed=5)
    hub = Hub(tmp, data, debounce=1.0).start()
    try:
        entry = hub.wait_ready("alpha")
        cfg = client_config(tmp, hub.url, ["alpha"])
        run_cli(["datasets", "sync"], config=cfg)
        local = tmp / "local" / "alpha"
        kills = 0
        for _ in range(rounds):
            old = tree_bytes(local)
            _touch_all(data / "alpha", b"2026-11-24,10.01,10.02,1234\r\n")
            entry = hub.wait_ready("alpha", newer_than=entry["version"], timeout=120)
            new = tree_bytes(data / "alpha")
            argv = cli_argv() + ["--config", str(cfg), "datasets", "sync"]
            while kill_after(argv, rng.uniform(0.2, 2.0)):
                kills += 1
                assert tree_bytes(local) in (old, new), "a kill left a mixed tree"
            assert tree_bytes(local) == new
        return f"{kills} kills, old-or-new after each"
    finally:
        hub.stop()


def soak_logs(tmp: Path, rounds: int, rng: random.Random) -> str:
    (tmp / "empty").mkdir()
    hub = Hub(tmp, tmp / "empty", logs_ingest={"api_keys": ["k"]}).start()
    try:
        cfg = write_yaml(tmp / "logs.yaml", {"state_dir": str(tmp / "client"), "logs": {
            "log_dir": str(tmp / "sinkhole"), "api_endpoint": f"{hub.url}/api/v1/logs/ips",
            "api_key": "k", "retry_delay": 0.05, "max_retries": 2, "timeout": 5,
            "batch_size": 20, "chunk_bytes": 4096, "listing_ttl": 0}})
        ips = public_ips(400 * rounds, seed=9)
        argv = cli_argv() + ["--config", str(cfg), "logs", "once"]
        kills = 0
        for n in range(rounds):
            write_log(tmp / "sinkhole", "2025-12-09", n % 24,
                      [line(ip, hour=n % 24) for ip in ips[n * 400:(n + 1) * 400]])
            kills += kill_after(argv, rng.uniform(0.2, 0.8))
        run_cli(["logs", "once"], config=cfg)
        request = urllib.request.Request(hub.url + "/api/v1/logs/stats",
                                         headers={"X-API-Key": "k"})
        with urllib.request.urlopen(request, timeout=10) as response:
            stats = json.loads(response.read())
        assert stats["distinct_ips"] == stats["total_records"] == len(ips), stats
        return f"{kills} kills, {len(ips)} addresses stored once each"
    finally:
        hub.stop()


def soak_pictures(tmp: Path, rounds: int, rng: random.Random) -> str:
    pics = make_pictures(tmp / "srv", 80, missing=4, size=(30000, 90000))
    url, table = sqlite_tasks(tmp, pics.tasks)
    server = start_server(tmp, pics.root)
    try:
        cfg = pictures_config(tmp, server.url, url, table, workers=4)
        argv = cli_argv() + ["--config", str(cfg), "pictures", "once"]
        kills = sum(kill_after(argv, rng.uniform(0.3, 1.5)) for _ in range(rounds))
        run_cli(["pictures", "once"], config=cfg)
        problems = check_mirror(pics, tmp / "mirror")
        assert problems == [], problems[:10]
        return f"{kills} kills, every picture in the mirror"
    finally:
        server.stop()


SOAKS = {"datasets": soak_datasets, "logs": soak_logs, "pictures": soak_pictures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--command", choices=[*SOAKS, "all"], default="all")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    for name, soak in SOAKS.items():
        if args.command in (name, "all"):
            with tempfile.TemporaryDirectory(prefix=f"dhs-soak-{name}-") as tmp:
                print(f"{name}: {soak(Path(tmp), args.rounds, rng)}", flush=True)


if __name__ == "__main__":
    main()
