"""Writing many pictures durably: an fsync per file against one sync per batch.

``--files`` (4 000) files of 200 KB each are written into a fresh directory
(40 subdirectories, as a mirror's cameras) by a child process, three ways:

- **plain**: open, write, close under the final name (the seed's client: no
  temp name, no sync; the reference);
- **fsync each**: ``core.statefile.AtomicFile``: temp name, fsync, rename;
- **staged**: ``core.stagedfiles.StagedFiles``, ``--batch`` (32) files at a
  time: temp names, one ``syncfs``, renames (what ``pictures`` does per bundle).

Each row: median wall seconds over ``--runs`` interleaved runs, the ratio to
plain, peak RSS (``/usr/bin/time -v``), and the CPU the whole machine spent
meanwhile (``/proc/stat``), a ``sync`` at the end included, so that writeback
done by the kernel's threads, not by the writer, is counted for every way. The
files stay until the end (``--files`` x 200 KB x 3 ways x ``--runs`` of disk).

    .venv/bin/python bench/bench_file_sync.py [--files 4000] [--batch 32] [--runs 3]
        [--dir /var/tmp]   # on the disk to measure (not tmpfs)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import bench_datasets as bd  # noqa: E402

WAYS = ("plain", "fsync each", "staged")
SIZE = 200 * 1024

CHILD = """
import os, sys
from pathlib import Path
from datahubsync.core.stagedfiles import StagedFiles
from datahubsync.core.statefile import AtomicFile
way, root, files, batch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
data = os.urandom(SIZE)
staged = StagedFiles()
for n in range(files):
    dest = root / f"cam{n % 40:02d}" / f"{n}.jpg"
    dest.parent.mkdir(exist_ok=True)
    if way == "plain":
        with open(dest, "wb") as fh:
            fh.write(data)
    elif way == "fsync each":
        with AtomicFile(dest, sync_directory=False) as writer:
            writer.write(data)
    else:
        with staged.writer(dest) as writer:
            writer.write(data)
        if len(staged) == batch or n == files - 1:
            assert staged.commit() == {}
""".replace("SIZE", str(SIZE))


def machine_cpu() -> float:
    """Seconds of CPU the machine has spent (all CPUs, idle and iowait excluded)."""
    return bd.machine_busy()[0] / bd._TICK


def run(way: str, root: Path, files: int, batch: int) -> tuple[float, float, int | None]:
    """(wall seconds, machine CPU seconds, peak RSS KiB) of one child writing the files
    into ``root``, a new directory: nothing is deleted between runs, because on a disk
    mounted with ``discard`` the freed blocks are trimmed at the next journal commit,
    which would bill one way for the run before it."""
    root.mkdir(parents=True)
    os.sync()
    time_v = ["/usr/bin/time", "-v"] if os.path.exists("/usr/bin/time") else []
    cpu0, t0 = machine_cpu(), time.perf_counter()
    proc = subprocess.run([*time_v, sys.executable, "-c", CHILD, way, str(root), str(files),
                           str(batch)], cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    os.sync()  # the writeback the kernel does later for "plain" is counted too
    cpu = machine_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(f"{way}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    rss = next((int(line.rsplit(":", 1)[1]) for line in proc.stderr.splitlines()
                if "Maximum resident set size" in line), None)
    return wall, cpu, rss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=32, help="files per sync for 'staged'")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp"),
                    help="where to write (a directory on the disk to measure)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dhs-bench-sync-", dir=args.dir))
    got: dict[str, list[tuple[float, float, int | None]]] = {way: [] for way in WAYS}
    try:
        for n in range(args.runs):
            for way in (WAYS if n % 2 == 0 else WAYS[::-1]):
                got[way].append(run(way, work / f"{n}-{WAYS.index(way)}", args.files,
                                    args.batch))
                print(f"run {n + 1} {way}: {got[way][-1][0]:.2f} s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    plain = statistics.median(w for w, _, _ in got["plain"])
    print(f"{args.files} files of {SIZE // 1024} KB in {args.dir}, median of {args.runs} runs; "
          f"staged: {args.batch} files per sync")
    print(f"{'way':12s} {'wall s':>7s} {'x plain':>8s} {'machine CPU s':>14s} {'peak RSS':>9s}")
    for way in WAYS:
        wall = statistics.median(w for w, _, _ in got[way])
        cpu = statistics.median(c for _, c, _ in got[way])
        rss = max((r for _, _, r in got[way] if r is not None), default=None)
        print(f"{way:12s} {wall:7.2f} {wall / plain:7.2f}x {cpu:14.2f} "
              f"{'-' if rss is None else f'{rss / 1024:.0f} MiB':>9s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
