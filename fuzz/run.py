"""Run every fuzz target (atheris) and report executions, coverage and crashes.

    python fuzz/run.py [--runs 1000000] [--max-seconds 600] [--jobs 2] [TARGET ...]

Each target runs until ``--runs`` executions or ``--max-seconds``, whichever
comes first, from its seed corpus (written here, kept in ``fuzz/corpus/``).
A crash leaves its input in ``fuzz/crashes/TARGET/``; turn it into a
regression test. Exit status 1 when any target crashed. ``make fuzz`` runs this.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import struct
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = ["archive", "legacy_frame", "config", "bodies", "range"]
ROOT = HERE.parent


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def seeds(target: str) -> dict[str, bytes]:
    if target == "archive":
        return {"one": _zip({"a.csv": b"1,2\r\n"}),
                "dirs": _zip({"d/": b"", "d/x.csv": b"x" * 2000}),
                "utf8": _zip({"沪市/600000.csv": "交易日期".encode("gbk")})}
    if target == "legacy_frame":
        paths = ["D:\\pic\\2025\\a.jpg", "D:\\pic\\..\\x", "/etc/passwd", "D:/pic/b/c.jpg"]
        return {f"p{n}": struct.pack(">I", len(p.encode())) + p.encode()
                for n, p in enumerate(paths)}
    if target == "config":
        return {"example": b"\0" + (ROOT / "config_client_example.yaml").read_bytes(),
                "small": b"\0hub:\n  url: http://h\ndatasets:\n  - {name: a, local_dir: /tmp/x}\n"}
    if target == "bodies":
        ingest = {"botnet_type": "ramnit", "source_ip": "1.2.3.4", "ip_data": [
            {"ip": "8.8.8.8", "timestamp": "2025-12-09 16:00:01", "date": "2025-12-09",
             "log_hour": 16, "raw_line_prefix": "hit"}]}
        push = {"task_id": "t1", "camera_id": "C", "time": "2025-10-01T08:00:00",
                "images": ["D:\\pic\\a.jpg", "http://x/y.jpg"]}
        seed004 = {"photoUrl": "http://x/a.jpg", "callTime": "2025-10-01 08:00:00",
                   "cameraCode": "CAM01"}
        return {k: json.dumps(v).encode() for k, v in
                {"ingest": ingest, "push": push, "seed004": seed004}.items()}
    return {"plain": b"\0\0\x05", "suffix": b"\x01\0-5"}


def run(target: str, runs: int, seconds: int) -> dict[str, object]:
    corpus = HERE / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    for name, data in seeds(target).items():
        (corpus / f"seed-{name}").write_bytes(data)
    crashes = HERE / "crashes" / target
    crashes.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(HERE / f"fuzz_{target}.py"), str(corpus), f"-runs={runs}",
            f"-max_total_time={seconds}", "-print_final_stats=1", "-max_len=65536",
            f"-artifact_prefix={crashes}/"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    out = proc.stdout + proc.stderr
    done = re.findall(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)", out)
    execs = re.search(r"stat::number_of_executed_units: (\d+)", out)
    found = sorted(p.name for p in crashes.iterdir())
    return {"target": target, "executions": int(execs.group(1)) if execs else None,
            "cov": int(done[-1][1]) if done else None, "ft": int(done[-1][2]) if done else None,
            "exit": proc.returncode, "crashes": found,
            "tail": "" if proc.returncode == 0 else out[-2000:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", default=TARGETS)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--max-seconds", type=int, default=600)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda t: run(t, args.runs, args.max_seconds), args.targets))
    failed = False
    for r in results:
        status = "ok" if r["exit"] == 0 and not r["crashes"] else "CRASH"
        failed |= status != "ok"
        print(f"{r['target']:13} {status:5} executions {r['executions']}  cov {r['cov']}  "
              f"ft {r['ft']}  crashes {len(r['crashes'])}")
        if r["tail"]:
            print(r["tail"])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
