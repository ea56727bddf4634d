"""Deflate codecs (serve.compress_codec) and inflaters, in process, beside zip/unzip.

On a stock-like CSV dataset (gen_dataset.py's ``stock-trading-data-pro``), times
``build_zip`` per codec and level and ``extract_safe`` per inflater, and runs
``zip -r -q -6`` and ``unzip -o -q`` on the same data in the same run (peak RSS of
those from ``/usr/bin/time -v`` when it exists). Sizes are relative to zlib at
level 6, the packages' size before codecs were a setting. Each configuration
runs ``--runs`` times, interleaved with the others; the median is shown.
Usage::

    .venv/bin/python bench/bench_codecs.py [--scale 0.1] [--data DIR] [--runs 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # runnable as a plain script
from gen_dataset import generate  # noqa: E402

from datahubsync.datasets import deflate  # noqa: E402
from datahubsync.datasets.archive import CHUNK, _fast_inflate, extract_safe  # noqa: E402
from datahubsync.datasets.packager import build_zip, scan_dataset  # noqa: E402

MB = 1_000_000
# (codec, serve.compress_level); isal's levels are mapped from these (deflate.level_for)
BUILDS = [("zlib", 6), ("zlib", 1), ("zlib", 9), ("zlib-ng", 6), ("zlib-ng", 1),
          ("zlib-ng", 3), ("zlib-ng", 9), ("isal", 1), ("isal", 3), ("isal", 6)]
INFLATERS = ["zlib", "zlib-ng", "isal"]
TIME_V = "/usr/bin/time"


def run_tool(argv: list[str], cwd: Path | None = None) -> tuple[float, int | None]:
    """Wall seconds and peak RSS (KiB, None without /usr/bin/time) of one command."""
    rss = None
    if os.path.exists(TIME_V):
        argv = [TIME_V, "-v", *argv]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed ({proc.returncode}): {proc.stderr.strip()}")
    for line in proc.stderr.splitlines():
        if "Maximum resident set size" in line:
            rss = int(line.rsplit(":", 1)[1])
    return seconds, rss


def read_through_zipfile(zip_path: Path) -> float:
    """Seconds to read every member as extract_member does (inflate, CRC), writing nothing."""
    t0 = time.perf_counter()
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            with zf.open(info) as src:
                _fast_inflate(src)
                while src.read(CHUNK):
                    pass
    return time.perf_counter() - t0


def inflate_only(zip_path: Path, name: str) -> float:
    """Seconds to inflate every deflated member's raw bytes in memory with ``name``."""
    mod = deflate.module(name)[1]
    raws = []
    with zipfile.ZipFile(zip_path) as zf, open(zip_path, "rb") as f:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_DEFLATED:
                continue
            f.seek(info.header_offset + 26)
            n, m = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
            f.seek(info.header_offset + 30 + n + m)
            raws.append(f.read(info.compress_size))
    t0 = time.perf_counter()
    for raw in raws:
        d = mod.decompressobj(-15)
        d.decompress(raw)
        d.flush()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="an existing dataset directory (else generated)")
    ap.add_argument("--scale", type=float, default=0.1, help="gen_dataset scale (0.1 = ~60 MB)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    for tool in ("zip", "unzip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not installed")
    with tempfile.TemporaryDirectory(prefix="codecbench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.data is None:
            info = generate(tmp / "gen", "stock-trading-data-pro", args.scale)
            root = tmp / "gen" / info.name
        else:
            root = args.data.resolve()
        entries = scan_dataset(root)
        size = sum(e.size for e in entries)
        for e in entries:  # warm the page cache so the first run is not the odd one out
            (root / e.relpath).read_bytes()
        print(f"data: {root} ({len(entries)} files, {size / MB:.1f} MB); threads "
              f"{args.threads}; runs {args.runs}; load average at start "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
        used = {codec: deflate.module(codec)[0] for codec, _ in BUILDS}
        if any(used[c] != c for c in used):
            print(f"warning: codecs fell back: {used}")
        # zlib is timed on purpose below: not the "no fast inflater" warning it would log
        logging.getLogger(deflate.__name__).setLevel(logging.ERROR)

        build_s: dict[tuple[str, int], list[float]] = {k: [] for k in BUILDS}
        sizes: dict[tuple[str, int], int] = {}
        inflate_s: dict[str, list[float]] = {k: [] for k in INFLATERS}
        read_s: dict[str, list[float]] = {k: [] for k in INFLATERS}
        extract_s: dict[str, list[float]] = {k: [] for k in INFLATERS}
        zip_s: list[float] = []
        unzip_s: list[float] = []
        rss: dict[str, int | None] = {}
        ref_pkg = tmp / f"pkg-{deflate.DEFAULT_CODEC}-6.zip"
        for run in range(args.runs):
            for codec, level in BUILDS[run % len(BUILDS):] + BUILDS[:run % len(BUILDS)]:
                dest = tmp / f"pkg-{codec}-{level}.zip"
                dest.unlink(missing_ok=True)
                t0 = time.perf_counter()
                built = build_zip(root, entries, dest, level=level, threads=args.threads,
                                  codec=codec)
                build_s[codec, level].append(time.perf_counter() - t0)
                sizes[codec, level] = built.size
            out = tmp / "zip.zip"
            out.unlink(missing_ok=True)
            seconds, rss["zip -r -q -6"] = run_tool(["zip", "-r", "-q", "-6", str(out), "."],
                                                   cwd=root)
            zip_s.append(seconds)
            sizes["zip -r -q -6", 6] = out.stat().st_size
            for name in INFLATERS[run % 3:] + INFLATERS[:run % 3]:  # no order favoured
                deflate.INFLATE_ORDER = () if name == "zlib" else (name,)
                dest_dir = tmp / f"x-{name}-{run}"
                dest_dir.mkdir()
                t0 = time.perf_counter()
                extract_safe(ref_pkg, dest_dir)
                extract_s[name].append(time.perf_counter() - t0)
                shutil.rmtree(dest_dir)
                read_s[name].append(read_through_zipfile(ref_pkg))
                inflate_s[name].append(inflate_only(ref_pkg, name))
            dest_dir = tmp / f"unzip-{run}"
            seconds, rss["unzip -o -q"] = run_tool(["unzip", "-o", "-q", str(ref_pkg), "-d",
                                                    str(dest_dir)])
            unzip_s.append(seconds)
            shutil.rmtree(dest_dir)
            print(f"run {run + 1}/{args.runs} done", flush=True)

        ref_size = sizes["zlib", 6]
        med: Callable[[list[float]], float] = statistics.median
        print(f"\nbuild (package of {size / MB:.1f} MB; ratio = size / zlib-6's "
              f"{ref_size / MB:.2f} MB)")
        print(f"{'codec':<14}{'level':>6}{'native':>8}{'seconds':>10}{'MB/s':>9}{'ratio':>8}"
              f"{'vs zlib-6':>11}")
        ref_s = med(build_s["zlib", 6])
        for (codec, level), times in build_s.items():
            s = med(times)
            print(f"{codec:<14}{level:>6}{deflate.level_for(codec, level):>8}{s:>10.2f}"
                  f"{size / MB / s:>9.1f}{sizes[codec, level] / ref_size:>8.3f}"
                  f"{ref_s / s:>10.1f}x")
        s = med(zip_s)
        print(f"{'zip -r -q -6':<14}{6:>6}{6:>8}{s:>10.2f}{size / MB / s:>9.1f}"
              f"{sizes['zip -r -q -6', 6] / ref_size:>8.3f}{ref_s / s:>10.1f}x"
              f"   peak RSS {rss['zip -r -q -6'] or 'n/a'} KiB")
        print(f"\ninflate ({ref_pkg.name}; extract = extract_safe to disk, no fsync; read = "
              f"the same through zipfile with CRC checks, no disk; inflate = raw deflate only)")
        print(f"{'inflater':<14}{'extract s':>10}{'MB/s':>9}{'read s':>9}{'MB/s':>9}"
              f"{'inflate s':>11}{'MB/s':>9}")
        for name in INFLATERS:
            e, r, i = med(extract_s[name]), med(read_s[name]), med(inflate_s[name])
            print(f"{name:<14}{e:>10.2f}{size / MB / e:>9.1f}{r:>9.3f}{size / MB / r:>9.1f}"
                  f"{i:>11.3f}{size / MB / i:>9.1f}")
        u = med(unzip_s)
        print(f"{'unzip -o -q':<14}{u:>10.2f}{size / MB / u:>9.1f}{'':>38}   peak RSS "
              f"{rss['unzip -o -q'] or 'n/a'} KiB")
        print(f"\nload average at end {os.getloadavg()[0]:.2f}; in-process figures, no peak "
              f"RSS for them (one process runs them all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
