r"""Pictures transfer, end to end on loopback: ours vs the seed's way vs aria2c + nginx.

Data: ``--images`` (10 000) files of seeded random bytes, 200 KB ± 20 %, in the
seed's shape: 8 per task (``<task_id>_TARE1..4.jpg``, ``_GROSS1..4.jpg``) in
``D:\pic\YYYY\MM\DD\CAMnn\``, spread over 5 days and 8 cameras. On disk they live
under ``<work>/srv/pic`` (the server root for the prefix ``D:\pic``), and the task
table ``<work>/tasks.db`` (SQLite, ``PIC_MATCHTASK``) lists their client paths.

Side by side, each into a fresh empty destination, wall clock around the client:

- **seed**: the seed's way, rebuilt from its protocol description
  (``bench/seed_protocol.py``): a serial one-connection-per-file TCP client
  against the serial one-thread server. ``--seed-sample K`` fetches only K evenly
  spread files and extrapolates the time linearly (the output says so).
- **seed+sync** (``--methods seed-sync``): the same, the client calling sync(2)
  before it exits. The seed leaves its pictures in the page cache; ours are on
  disk before the ledger records them, so this is the like-for-like figure. The
  goals stay on the plain seed.
- **aria2c+nginx**: ``aria2c -j16 -x1`` with an input file (one ``out=`` per URL,
  so it rebuilds the same tree) against nginx (``bench_pictures_serve.start_nginx``:
  ``worker_processes 2``, i.e. one per core on the 2-core bench machine,
  ``sendfile on``, no access log, no auth) serving ``<work>/srv/pic`` at
  ``/files/D:/pic/``.
- **ours, w=8 and w=16**: ``datahubsync pictures once`` (``transport: http``,
  ``workers: w``, task table read through SQLAlchemy) against a fresh
  ``datahubsync serve`` with ``picture_roots`` and a bearer token
  (``bench_pictures_serve.start_ours``: 2 serve workers). If the command is missing
  or exits non-zero its stderr is shown and the row says "not available".

Every destination is checked against the source: the full list of files with
their sizes, plus the sha256 of 200 sampled files (``--verify-all``: every file);
a run that did not deliver every file is FAILED. The page cache is warm (the data
is read once first); dirty pages are flushed and the bench waits (bounded) for
idle CPUs before each timed client (``bench_datasets.run_timed``).

Peak RSS: the client's from ``/usr/bin/time -v``; each server's as VmHWM of its
processes (parent + forked workers) read just before it is stopped, shown as the
largest process and the sum; CPU: user + sys seconds of the client and of the
server's processes during the timed run. Goals: ours >= 1.0x the seed's speed on
loopback and >= 15x with ``--rtt-ms 5`` (``seed_goal``), >= 1.0x the speed of aria2c +
nginx.

    apt-get install -y nginx aria2 time
    .venv/bin/python bench/bench_pictures.py [--images 10000] [--seed-sample K] [--json]
    .venv/bin/python bench/bench_pictures.py --images 800 --workdir /tmp/dhs-pics --keep

``--rtt-ms X`` (root, iproute2) runs the whole comparison in a new network
namespace ``dhs-bench-<pid>`` whose ``lo`` has ``tc qdisc ... netem delay X/2 ms``
(each packet crosses lo once per direction), checked with ``ping`` (the measured
rtt is printed in the header); the script re-runs itself inside it with
``ip netns exec`` (so nginx, aria2c, both servers and all clients run there) and
deletes the namespace afterwards, also on error or Ctrl-C. The host's network is
untouched. A kernel without ``sch_netem`` gets a userspace stand-in instead: an
iptables ``-j NFQUEUE`` rule on the namespace's OUTPUT chain and ``nfq_delayer``
holding each packet X/2 ms (``apt-get install -y iptables``; its CPU is shown as
``delayer_cpu_s`` in ``--json``, and it shares the CPUs with the bench). With a
latency the seed's way defaults to ``--seed-sample 500``.

    .venv/bin/python bench/bench_pictures.py --images 2000 --rtt-ms 2 --workers 8 16

``--rounds N`` runs every method N times, the order reversed every other round,
and shows each one's median run (with all N times): on this VM one run's time
moves by half from one minute to the next, and deleting files on a disk mounted
with ``discard`` slows the file creation of whatever runs next, so every run
writes a new destination and all are deleted at the end.

    .venv/bin/python bench/bench_pictures.py --images 4000 --methods seed ours ours-front \
        --workers 8 --rounds 3

``--keep`` keeps the work dir (data, destinations, logs); a later run with the same
``--workdir``, ``--images`` and ``--seed`` reuses the generated pictures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import bench_datasets as bd  # noqa: E402
import bench_nginx as bng  # noqa: E402
import bench_pictures_serve as bps  # noqa: E402
from seed_protocol import local_path  # noqa: E402

PREFIX = "D:\\pic"
KINDS = [f"{kind}{n}" for kind in ("TARE", "GROSS") for n in range(1, 5)]
COLUMNS = [f"{kind}_IMAGE_PATH{n}" for kind in ("TARE", "GROSS") for n in range(1, 5)]
TABLE = "PIC_MATCHTASK"
DAYS, CAMERAS = 5, 8
START = dt.datetime(2025, 10, 1)
IMAGE_BYTES, SPREAD = 200 * 1024, 0.2
FIRST_TASK_ID = 25_100_001
DATA_VERSION = 1  # bump when the generated shape changes (invalidates kept data)


# --------------------------------------------------------------------------- data


@dataclass
class Dataset:
    root: Path  # <work>/srv/pic: the server root for PREFIX
    paths: list[str]  # client paths (D:\pic\...), in task order
    sizes: dict[str, int]  # relpath in a destination (pic/2025/...) -> size

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())


def rel_of(client_path: str) -> str:
    """Where the seed's client (drive dropped) puts a client path below its local root."""
    return local_path(Path(), client_path).as_posix()


def task_rows(images: int) -> list[tuple[object, ...]]:
    """(TASK_ID, CREATED_TIME, 8 image paths or NULL) for ceil(images / 8) tasks."""
    tasks = math.ceil(images / len(KINDS))
    step = dt.timedelta(seconds=DAYS * 86400 / max(tasks, 1))
    rows: list[tuple[object, ...]] = []
    for n in range(tasks):
        created = START + n * step
        task_id = FIRST_TASK_ID + n
        folder = f"{PREFIX}\\{created:%Y}\\{created:%m}\\{created:%d}\\CAM{1 + n % CAMERAS:02d}"
        left = images - n * len(KINDS)
        paths = [f"{folder}\\{task_id}_{kind}.jpg" if i < left else None
                 for i, kind in enumerate(KINDS)]
        rows.append((task_id, created.strftime("%Y-%m-%d %H:%M:%S.%f"), *paths))
    return rows


def generate(work: Path, images: int, seed: int) -> Dataset:
    """Pictures under <work>/srv/pic and the task table <work>/tasks.db (kept data reused)."""
    srv = work / "srv"
    root = srv / "pic"
    rows = task_rows(images)
    paths = [p for row in rows for p in row[2:] if isinstance(p, str)]
    manifest = srv / "manifest.json"
    key = {"version": DATA_VERSION, "images": images, "seed": seed}
    if manifest.exists() and json.loads(manifest.read_text()).get("key") == key:
        sizes = json.loads(manifest.read_text())["sizes"]
        bd.log(f"reusing {len(sizes)} pictures in {root}")
    else:
        shutil.rmtree(srv, ignore_errors=True)
        rng = random.Random(seed)
        low, high = int(IMAGE_BYTES * (1 - SPREAD)), int(IMAGE_BYTES * (1 + SPREAD))
        sizes = {}
        started = time.perf_counter()
        for path in paths:
            rel = rel_of(path)
            target = srv / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            size = rng.randint(low, high)
            target.write_bytes(rng.randbytes(size))
            sizes[rel] = size
        manifest.write_text(json.dumps({"key": key, "sizes": sizes}))
        bd.log(f"generated {len(paths)} pictures, {sum(sizes.values()) / 1e6:.0f} MB, in "
               f"{time.perf_counter() - started:.1f} s")
    db = work / "tasks.db"
    db.unlink(missing_ok=True)
    with sqlite3.connect(db) as conn:
        images_ddl = ", ".join(f"{c} TEXT" for c in COLUMNS)
        conn.execute(f"CREATE TABLE {TABLE} (TASK_ID INTEGER PRIMARY KEY, "
                     f"CREATED_TIME TIMESTAMP NOT NULL, {images_ddl})")
        conn.executemany(f"INSERT INTO {TABLE} VALUES ({', '.join('?' * (2 + len(COLUMNS)))})",
                         rows)
    conn.close()
    return Dataset(root, paths, sizes)


# --------------------------------------------------------------------------- runs

# The seed's client loop in a bare child (so its RSS is its own); cwd is bench/.
SEED_CLIENT = (
    "import json, sys; from pathlib import Path; from seed_protocol import fetch_serial; "
    "paths = Path(sys.argv[2]).read_text('utf-8').splitlines(); "
    "print(json.dumps(fetch_serial('127.0.0.1', int(sys.argv[1]), paths, Path(sys.argv[3]))))"
)
# seed-sync: the same client, then sync(2) before it exits, so that its pictures are on disk
# when the clock stops, as ours are (they are made durable before the ledger records them)
SEED_CLIENT_SYNCED = SEED_CLIENT + "; import os; os.sync()"
ARIA2C = ["aria2c", "-j16", "-x1", "--file-allocation=none", "--console-log-level=warn",
          "--summary-interval=0", "--auto-file-renaming=false", "--allow-overwrite=true"]


@dataclass
class Result:
    method: str
    status: str = "ok"  # "ok", "FAILED: why" or "not available (exit N; ...)"
    seconds: float | None = None  # for all the pictures (extrapolated for a seed sample)
    measured_seconds: float | None = None
    files: int = 0  # files this run was asked to fetch
    bytes: int = 0
    extrapolated: bool = False
    client_rss_kib: int | None = None
    client_cpu_s: float | None = None
    server_rss_kib: list[int] = field(default_factory=list)  # VmHWM of each server process
    server_cpu_s: float | None = None
    other_cpu_s: float | None = None  # CPU the rest of the machine used meanwhile
    delayer_cpu_s: float | None = None  # --rtt-ms without netem: the NFQUEUE delayer's CPU

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def stop(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def timed_client(result: Result, label: str, cmd: list[str], server_pid: int,
                 cwd: Path = REPO) -> bd.Measured:
    """Run cmd under /usr/bin/time -v while the server runs; RuntimeError if it exits non-zero."""
    def server_pids() -> list[int]:
        return bd.process_tree(server_pid)

    delayer = json.loads(os.environ.get(INSIDE_ENV, "{}")).get("delayer_pid")
    # the server's CPU (and the --rtt-ms delayer's, if any) is not interference
    bd.SETTINGS["helper_pids"] = lambda: server_pids() + ([delayer] if delayer else [])
    cpu0 = sum(bd.process_cpu(p) for p in server_pids())
    d0 = bd.process_cpu(delayer) if delayer else 0
    bd.log(f"{label}: running")
    m = bd.run_timed(cmd, cwd=cwd, label=label)
    if delayer:
        result.delayer_cpu_s = round((bd.process_cpu(delayer) - d0) / bd._TICK, 2)
    result.server_cpu_s = round((sum(bd.process_cpu(p) for p in server_pids()) - cpu0)
                                / bd._TICK, 2)
    result.measured_seconds = round(m.seconds, 3)
    result.client_rss_kib, result.client_cpu_s = m.rss_kb, round(m.cpu_s, 2)
    result.other_cpu_s = round(m.other_cpu_s, 2)
    return m


def run_seed(work: Path, data: Dataset, paths: list[str], dest: Path,
             synced: bool = False) -> Result:
    """SerialServer (own process) + fetch_serial (own process) for ``paths``; ``synced``:
    the client calls sync(2) before it exits."""
    result = Result("seed+sync: serial TCP, then sync" if synced else "seed: serial TCP")
    port = bps.free_port()
    with open(work / "seed-server.log", "ab") as log:
        server = subprocess.Popen([sys.executable, str(HERE / "seed_protocol.py"), "serve",
                                   "--port", str(port), "--prefix", PREFIX,
                                   "--root", str(data.root)], stdout=log, stderr=log)
    try:
        bps.wait_port(port)
        listing = work / "seed-paths.txt"
        listing.write_text("\n".join(paths) + "\n", "utf-8")
        client = SEED_CLIENT_SYNCED if synced else SEED_CLIENT
        m = timed_client(result, "seed", [sys.executable, "-c", client, str(port),
                                          str(listing), str(dest)], server.pid, cwd=HERE)
        counts = json.loads(m.stdout)
        if counts["downloaded"] != len(paths):
            result.status = f"FAILED: {counts}"
    except RuntimeError as exc:
        bd.log(str(exc))
        result.status = f"FAILED: {str(exc).splitlines()[0]}"
    finally:
        result.server_rss_kib = bps.peak_rss_kib(server.pid)
        stop(server, signal.SIGTERM)
    return result


def run_aria2c(work: Path, data: Dataset, dest: Path) -> Result:
    """aria2c -j16 with one ``out=`` per URL against nginx serving the same root."""
    result = Result("aria2c -j16 + nginx")
    nwork = work / "nginx"
    nwork.mkdir(exist_ok=True)
    nginx, port = bps.start_nginx(nwork, data.root)
    try:
        listing = work / "aria2c-input.txt"
        listing.write_text("".join(
            f"http://127.0.0.1:{port}/files/{p.replace(chr(92), '/')}\n  out={rel_of(p)}\n"
            for p in data.paths), "utf-8")
        timed_client(result, "aria2c", [*ARIA2C, "-d", str(dest), "-i", str(listing)],
                     nginx.pid)
    except RuntimeError as exc:
        bd.log(str(exc))
        result.status = f"FAILED: {str(exc).splitlines()[0]}"
    finally:
        result.server_rss_kib = bps.peak_rss_kib(nginx.pid)
        stop(nginx, signal.SIGQUIT)
    return result


def wait_health(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def run_ours(work: Path, dest: Path, root: Path, workers: int, front: bool = False,
             bundle_files: int | None = None) -> Result:
    """``datahubsync pictures once`` (http, ``workers``) against a fresh ``datahubsync serve``,
    or (``front``) through nginx configured by ``serve nginx-config`` in front of it."""
    label = f"w={workers}" + (" via nginx front" if front else "") + (
        f", bundle_files={bundle_files}" if bundle_files is not None else "")
    result = Result(f"ours: pictures once, {label}")
    swork = work / f"serve-{workers}{'-front' if front else ''}"
    swork.mkdir(exist_ok=True)
    server, port = bps.start_ours(swork, root)
    nginx = None
    try:
        wait_health(port)
        if front:
            nginx, port = bng.start_front(swork, port)
            wait_health(port)
        config = swork / "client.yaml"
        pictures = {"source": "sql", "database_url": f"sqlite:///{work / 'tasks.db'}",
                    "table": TABLE, "transport": "http",
                    "server_url": f"http://127.0.0.1:{port}", "token": bps.TOKEN,
                    "workers": workers, "local_root": str(dest), "batch_size": 2000}
        if bundle_files is not None:
            pictures["bundle_files"] = bundle_files
        bd.write_yaml(config, json.dumps({
            "state_dir": str(work / f"client-state-{dest.name}"),
            "logging": {"level": "WARNING"}, "pictures": pictures}, indent=2))
        timed_client(result, f"ours {label}", [sys.executable, "-m", "datahubsync",
                                               "--config", str(config), "pictures", "once"],
                     server.pid)
    except RuntimeError as exc:
        bd.log(str(exc))
        code = re.search(r"\(exit (-?\d+)\)", str(exc))
        result.status = f"not available (exit {code.group(1) if code else '?'}; stderr above)"
    finally:
        result.server_rss_kib = bps.peak_rss_kib(server.pid)
        if nginx is not None:
            stop(nginx, signal.SIGTERM)
        stop(server, signal.SIGTERM)
    return result


def verify(dest: Path, expected: dict[str, int], src: Path, sample: int | None) -> str | None:
    """None if dest holds exactly the expected files with the source's bytes, else why not.

    Sizes are compared for every file, the sha256 for ``sample`` of them (None: all).
    """
    got = bd.tree(dest)
    if got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(r for r in set(got) & set(expected) if got[r] != expected[r])
        return (f"{len(got)} files for {len(expected)}: {len(missing)} missing, {len(extra)} "
                f"extra, {len(wrong)} of the wrong size, e.g. {(missing + extra + wrong)[:2]}")
    names = sorted(expected)
    if sample is not None and sample < len(names):
        names = random.Random(0).sample(names, sample)
    for rel in names:
        if (hashlib.sha256((src / rel).read_bytes()).digest()
                != hashlib.sha256((dest / rel).read_bytes()).digest()):
            return f"content differs: {rel}"
    return None


def median_result(runs: list[Result]) -> Result:
    """The run with the median time (the lower middle one of an even count); a failed run
    is returned as such, so a failure is never hidden by the other rounds."""
    failed = [r for r in runs if not r.ok or r.seconds is None]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda r: r.seconds or 0.0)
    chosen = ordered[(len(ordered) - 1) // 2]
    if len(runs) > 1:
        chosen.method += f" (median of {len(runs)}: " + ", ".join(
            f"{r.seconds:.2f}" for r in runs) + " s)"
    return chosen


def check(result: Result, dest: Path, data: Dataset, paths: list[str],
          sample: int | None) -> None:
    """Fill in files, bytes and the time for all pictures; FAILED unless dest is complete."""
    expected = {rel: data.sizes[rel] for rel in map(rel_of, paths)}
    result.files, result.bytes = len(expected), sum(expected.values())
    if result.measured_seconds is not None:
        result.seconds = round(result.measured_seconds * len(data.paths) / len(paths), 3)
        result.extrapolated = len(paths) < len(data.paths)
    if result.ok:
        why = verify(dest, expected, data.root.parent, sample)
        if why:
            result.status = f"FAILED: {why}"


# --------------------------------------------------------------------------- report


def mib(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.0f} MiB"


def ratio(num: Result | None, den: Result | None) -> float | None:
    """num.seconds / den.seconds when both runs are valid."""
    if num is None or den is None or not (num.ok and den.ok and num.seconds and den.seconds):
        return None
    return round(num.seconds / den.seconds, 3)


def speedups(results: list[Result], r: Result) -> tuple[float | None, float | None]:
    """r's speed as a multiple of the seed's way and of aria2c + nginx (their time / r's)."""
    seed = next((x for x in results if x.method.startswith("seed:")), None)
    aria = next((x for x in results if x.method.startswith("aria2c")), None)
    return ratio(seed, r), ratio(aria, r)


def machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(),
            "nginx": bd.version_of(["nginx", "-v"], "nginx version"),
            "aria2c": bd.version_of(["aria2c", "--version"], "aria2 version")}


def seed_goal(rtt_ms: float) -> float:
    """How many times the seed's speed ``pictures once`` must reach: on loopback, where
    per-file CPU on two shared cores decides, at least its speed; with round trips, where
    the seed waits for each file in turn, 15 times it."""
    return 15.0 if rtt_ms > 0 else 1.0


def table(results: list[Result], images: int, goal: float = 1.0) -> str:
    seed = next((r for r in results if r.method.startswith("seed:")), None)
    synced = next((r for r in results if r.method.startswith("seed+sync:")), None)
    rows = [("method", "seconds", "files/s", "MB/s", "x seed", "x aria2c", "client RSS",
             "server RSS max/sum xprocs", "CPU client/server", "status")]
    for r in results:
        timed = r.seconds is not None and r.measured_seconds
        vs_seed, vs_aria = speedups(results, r)
        rows.append((
            r.method + (" *" if r.extrapolated else ""),
            f"{r.seconds:.2f}" if timed else "-",
            f"{r.files / r.measured_seconds:.0f}" if timed else "-",
            f"{r.bytes / bd.MB / r.measured_seconds:.1f}" if timed else "-",
            f"{vs_seed:.1f}x" if vs_seed else "-",
            f"{vs_aria:.2f}x" if vs_aria else "-",
            mib(r.client_rss_kib),
            (f"{max(r.server_rss_kib) / 1024:.0f}/{sum(r.server_rss_kib) / 1024:.0f} MiB "
             f"x{len(r.server_rss_kib)}") if r.server_rss_kib else "-",
            (f"{r.client_cpu_s:.2f}/{r.server_cpu_s:.2f} s"
             if r.client_cpu_s is not None and r.server_cpu_s is not None else "-"),
            r.status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i in (0, 9) else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    if seed is not None and seed.extrapolated:
        lines.append(f"* extrapolated linearly from {seed.files} of {images} files "
                     f"({seed.measured_seconds:.2f} s measured)")
    for r in results:
        if r.method.startswith("ours") and r.ok:
            s, a = speedups(results, r)
            lines.append(f"{r.method}: {f'{s:.1f}x' if s else '-'} the seed's speed (goal >= "
                         f"{goal:g}x: {'-' if s is None else bd.ok(s >= goal)}), "
                         f"{f'{a:.2f}x' if a else '-'} aria2c+nginx's (goal >= 1.0x: "
                         f"{'-' if a is None else bd.ok(a >= 1.0)})")
            both = ratio(synced, r)
            if both is not None:
                lines.append(f"{r.method}: {both:.1f}x the speed of the seed followed by sync "
                             "(both durable when the clock stops; no goal)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- latency

INSIDE_ENV = "DHS_BENCH_NETNS"  # set (JSON: namespace, measured rtt, how) in the re-executed run
NFQ_SUBSYS, NFQ_QUEUE = 3, 0  # NFNL_SUBSYS_QUEUE; the NFQUEUE number used in the namespace


def nfq_delayer(delay_ms: float) -> int:
    """Hold every packet queued to NFQUEUE 0 for ``delay_ms``, then accept it (FIFO).

    The fallback when the kernel has no ``sch_netem``: an iptables rule on the
    namespace's OUTPUT chain (``-j NFQUEUE``) queues every packet here (nfnetlink_queue over a raw
    netlink socket, metadata only, GSO packets kept whole), and batch verdicts
    release them in order once their delay is over. Loopback packets cross the
    output hook once, so ``delay_ms`` = RTT / 2 as with netem.
    """
    import collections
    import select
    import socket
    import struct

    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
    sock.setsockopt(270, 5, 1)  # SOL_NETLINK, NETLINK_NO_ENOBUFS
    sock.bind((0, 0))

    def message(kind: int, attrs: list[tuple[int, bytes]], flags: int = 1) -> bytes:
        body = struct.pack("!BBH", 0, 0, NFQ_QUEUE)  # nfgenmsg: AF_UNSPEC, v0, queue (BE)
        for typ, payload in attrs:
            attr = struct.pack("=HH", 4 + len(payload), typ) + payload
            body += attr + b"\0" * (-len(attr) % 4)
        return struct.pack("=IHHII", 16 + len(body), NFQ_SUBSYS << 8 | kind, flags, 0, 0) + body

    def config(attrs: list[tuple[int, bytes]]) -> None:  # NFQNL_MSG_CONFIG, with an ack
        sock.send(message(2, attrs, 1 | 4))
        reply = sock.recv(65536)
        if struct.unpack_from("=H", reply, 4)[0] == 2 and (err := struct.unpack_from(
                "=i", reply, 16)[0]):
            raise OSError(-err, f"nfnetlink_queue config {attrs}: {os.strerror(-err)}")

    config([(1, struct.pack("!BxH", 1, 0))])  # NFQA_CFG_CMD: BIND
    config([(2, struct.pack("!IB", 0xFFFF, 1))])  # NFQA_CFG_PARAMS: COPY_META
    config([(3, struct.pack("!I", 1 << 16))])  # NFQA_CFG_QUEUE_MAXLEN
    config([(5, struct.pack("!I", 4)), (4, struct.pack("!I", 4))])  # FLAGS, MASK: F_GSO
    sock.setblocking(False)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    delay = delay_ms / 1000
    pending: collections.deque[tuple[float, int]] = collections.deque()
    packet_type = NFQ_SUBSYS << 8  # NFQNL_MSG_PACKET
    while True:
        select.select([sock], [], [],
                      max(0.0, pending[0][0] - time.monotonic()) if pending else None)
        now = time.monotonic()
        while True:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                break
            off = 0
            while off + 20 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind == packet_type:
                    at, end = off + 20, off + length
                    while at + 8 <= end:
                        alen, atype = struct.unpack_from("=HH", data, at)
                        if atype & 0x7FFF == 1:  # NFQA_PACKET_HDR: packet id first
                            pending.append((now + delay, struct.unpack_from("!I", data, at + 4)[0]))
                            break
                        at += (alen + 3) & ~3
                off += max(16, (length + 3) & ~3)
        now, last = time.monotonic(), None
        while pending and pending[0][0] <= now:
            last = pending.popleft()[1]
        if last is not None:  # NFQNL_MSG_VERDICT_BATCH: NF_ACCEPT every id <= last
            sock.send(message(3, [(2, struct.pack("!II", 1, last))]))


def ping_rtt(ns: list[str]) -> float:
    """Average rtt (ms) of ``ping -c 5 127.0.0.1`` run through the ``ns`` prefix."""
    out = subprocess.run([*ns, "ping", "-c", "5", "-i", "0.2", "127.0.0.1"], capture_output=True,
                         text=True, check=True).stdout
    found = re.search(r"rtt min/avg/max/mdev = [\d.]+/([\d.]+)/", out)
    if not found:
        raise RuntimeError(f"no rtt in ping's output:\n{out}")
    return float(found.group(1))


def run_in_netns(rtt_ms: float, argv: list[str]) -> int:
    """Re-run this script with ``argv`` in a new network namespace whose lo has rtt_ms of RTT.

    The namespace's ``lo`` gets ``tc netem delay rtt/2`` (each packet crosses lo
    once, so once per direction); a kernel without sch_netem gets the NFQUEUE
    delayer instead. The measured ping rtt is passed down for the output header.
    The namespace (and the delayer) go away afterwards, also on error or Ctrl-C.
    """
    for tool in ("ip", "tc", "ping"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install -y iproute2 iputils-ping")
    name = f"dhs-bench-{os.getpid()}"
    ns = ["ip", "netns", "exec", name]
    half = rtt_ms / 2
    delayer: subprocess.Popen[str] | None = None
    child: subprocess.Popen[bytes] | None = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run([*ns, "ip", "link", "set", "lo", "up"], check=True)
        netem = subprocess.run([*ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem",
                                "delay", f"{half:g}ms"], capture_output=True, text=True)
        if netem.returncode == 0:
            how = f"tc netem delay {half:g}ms on lo"
        else:
            if not shutil.which("iptables"):
                raise SystemExit("no sch_netem and no iptables: apt-get install -y iptables")
            bd.log(f"tc netem unavailable ({netem.stderr.strip()}): NFQUEUE delayer instead")
            delayer = subprocess.Popen([*ns, sys.executable, str(Path(__file__).resolve()),
                                        "--nfq-delayer", f"{half:g}"],
                                       stdout=subprocess.PIPE, text=True)
            if delayer.stdout is None or delayer.stdout.readline().strip() != "ready":
                raise RuntimeError("the NFQUEUE delayer did not start")
            subprocess.run([*ns, "iptables", "-A", "OUTPUT", "-j", "NFQUEUE", "--queue-num",
                            str(NFQ_QUEUE)], check=True)
            how = f"NFQUEUE delayer, {half:g}ms per packet on lo (no sch_netem in this kernel)"
        rtt = ping_rtt(ns)
        bd.log(f"netns {name}: {how}; ping rtt {rtt:.2f} ms (asked {rtt_ms:g} ms)")
        env = dict(os.environ)
        env[INSIDE_ENV] = json.dumps({"netns": name, "rtt_ms": rtt_ms, "ping_rtt_ms": rtt,
                                      "how": how, "delayer_pid": delayer and delayer.pid})
        child = subprocess.Popen([*ns, sys.executable, str(Path(__file__).resolve()), *argv],
                                 env=env)
        try:
            return child.wait()
        except KeyboardInterrupt:  # the child got the Ctrl-C too: let it clean up
            child.wait(60)
            return 130
    finally:
        for proc, sig in ((child, signal.SIGTERM), (delayer, signal.SIGTERM)):
            if proc is not None and proc.poll() is None:
                proc.send_signal(sig)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        subprocess.run(["ip", "netns", "del", name], check=False)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1, help="RNG seed of the generated data")
    ap.add_argument("--seed-sample", type=int, metavar="K",
                    help="the seed's way fetches only K evenly spread files; time extrapolated")
    ap.add_argument("--workers", type=int, nargs="+", default=[8, 16],
                    help="pictures.workers of our runs (one run each)")
    ap.add_argument("--methods", nargs="+",
                    choices=["seed", "seed-sync", "aria2c", "ours", "ours-front"],
                    default=["seed", "aria2c", "ours"],
                    help="ours-front: pictures once through the nginx front-end of "
                         "`serve nginx-config`; seed-sync: the seed's client, then sync(2) "
                         "before it exits (its pictures on disk, as ours are, when the clock "
                         "stops)")
    ap.add_argument("--bundle-files", type=int, help="pictures.bundle_files of our runs "
                    "(default: the config's default; 0 = one GET per picture)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every method this many times, the order reversed every other "
                         "round, and show each one's median run (each run writes a new "
                         "destination; all are deleted at the end, because deleting on a "
                         "disk mounted with discard slows the next run's file creation)")
    ap.add_argument("--verify-all", action="store_true", help="sha256 of every file, not 200")
    ap.add_argument("--settle-max", type=float, default=30,
                    help="seconds to wait at most for idle CPUs before each run")
    ap.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    ap.add_argument("--keep", action="store_true", help="keep the work dir afterwards")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--rtt-ms", type=float, default=0.0, metavar="X",
                    help="run everything in a new network namespace whose loopback has X ms "
                         "of round-trip time (tc netem, X/2 per direction; needs root and "
                         "iproute2); the seed's way then defaults to --seed-sample 500")
    ap.add_argument("--nfq-delayer", type=float, metavar="MS", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    if args.nfq_delayer is not None:  # internal: run_in_netns's fallback when netem is missing
        return nfq_delayer(args.nfq_delayer)
    if args.rtt_ms < 0:
        ap.error("--rtt-ms must be >= 0")
    inside = json.loads(os.environ[INSIDE_ENV]) if INSIDE_ENV in os.environ else None
    tools = (["nginx", "aria2c"] if "aria2c" in args.methods else []) + (
        ["nginx"] if "ours-front" in args.methods else [])
    for tool in ["/usr/bin/time"] + tools:
        if not shutil.which(tool):
            ap.error(f"{tool} not found: apt-get install -y nginx aria2 time")
    if args.rtt_ms > 0 and inside is None:
        return run_in_netns(args.rtt_ms, argv)
    sample_note = ""
    if args.rtt_ms > 0 and args.seed_sample is None and {"seed", "seed-sync"} & set(args.methods):
        args.seed_sample = 500
        sample_note = " (the default with --rtt-ms; --seed-sample K to change it)"
    bd.SETTINGS["settle_max"] = args.settle_max
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="dhs-bench-pics-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # nginx workers run as nobody
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally blocks run
    try:
        data = generate(work, args.images, args.seed)
        bd.warm(data.root)

        def dest(name: str) -> Path:
            path = bd.fresh(work / "dest" / name)
            path.mkdir(parents=True)
            return path

        sample = None if args.verify_all else 200
        seedlike = bool({"seed", "seed-sync"} & set(args.methods))
        seed_paths = data.paths
        if args.seed_sample and args.seed_sample < len(seed_paths):
            seed_paths = [seed_paths[n * len(seed_paths) // args.seed_sample]
                          for n in range(args.seed_sample)]
        runs: list[tuple[str, list[str], Callable[[Path], Result]]] = []
        if "seed" in args.methods:
            runs.append(("seed", seed_paths, lambda d: run_seed(work, data, seed_paths, d)))
        if "seed-sync" in args.methods:
            runs.append(("seed-sync", seed_paths,
                         lambda d: run_seed(work, data, seed_paths, d, synced=True)))
        if "aria2c" in args.methods:
            runs.append(("aria2c", data.paths, lambda d: run_aria2c(work, data, d)))
        if "ours" in args.methods:
            for w in args.workers:
                runs.append((f"ours-{w}", data.paths, lambda d, w=w: run_ours(
                    work, d, data.root, w, bundle_files=args.bundle_files)))
        if "ours-front" in args.methods:
            for w in args.workers:
                runs.append((f"ours-front-{w}", data.paths, lambda d, w=w: run_ours(
                    work, d, data.root, w, front=True, bundle_files=args.bundle_files)))
        rounds: dict[str, list[Result]] = {name: [] for name, _, _ in runs}
        for n in range(args.rounds):  # the order flips every round
            for name, paths, run in (runs if n % 2 == 0 else runs[::-1]):
                target = dest(f"{name}-{n}")  # nothing deleted until the end (see --rounds)
                result = run(target)
                check(result, target, data, paths, sample)
                bd.log(f"round {n + 1} {name}: {result.seconds} s, {result.status}")
                rounds[name].append(result)
        results = [median_result(rounds[name]) for name, _, _ in runs]
        report = {"images": len(data.paths), "total_bytes": data.total_bytes,
                  "image_bytes": f"{IMAGE_BYTES} +-{SPREAD:.0%}", "machine": machine(),
                  "latency": inside and {k: inside[k] for k in ("rtt_ms", "ping_rtt_ms", "how")},
                  "seed_sample": len(seed_paths) if seedlike else None,
                  "results": [asdict(r) | dict(zip(("x_seed", "x_aria2c"), speedups(results, r),
                                                    strict=True)) for r in results]}
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            m = report["machine"]
            where = "loopback" if inside is None else (
                f"loopback with {inside['rtt_ms']:g} ms RTT (ping: {inside['ping_rtt_ms']:.2f} ms;"
                f" {inside['how']}; netns {inside['netns']})")
            print(f"{len(data.paths)} pictures, {data.total_bytes / bd.MB:.0f} MB, {where}, "
                  f"warm page cache; {m['cpus']} CPUs, Linux {m['kernel']}, Python {m['python']}, "
                  f"{m['nginx']}, {m['aria2c']}")
            if seedlike and len(seed_paths) < len(data.paths):
                print(f"the seed's way: a sample of {len(seed_paths)} files, time extrapolated"
                      f"{sample_note}")
            print(table(results, len(data.paths), seed_goal(args.rtt_ms)))
            if any(r.delayer_cpu_s is not None for r in results):
                print("NFQUEUE delayer CPU (shares the CPUs with the bench): " + ", ".join(
                    f"{r.method} {r.delayer_cpu_s:.2f} s" for r in results
                    if r.delayer_cpu_s is not None))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
