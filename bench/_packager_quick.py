"""Quick benchmark: build_zip (threads=2, level 6) vs `zip -r -q -6`.

Generates ~600 GBK/CRLF stock-like CSV files (~60 MB) in per-stock folders with
Chinese names, then times both tools alternately. Usage:

    .venv/bin/python bench/_packager_quick.py [--files 600] [--rows 1650] [--runs 3]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a plain script
from datahubsync.datasets.packager import build_zip, scan_dataset  # noqa: E402

NAMES = ["浦发银行", "平安银行", "万科A", "贵州茅台", "中国平安", "招商银行", "宁德时代", "比亚迪"]


def make_dataset(root: Path, files: int, rows: int, seed: int = 42) -> int:
    """Write the dataset; return total bytes. Prices random-walk like real quotes."""
    rnd = random.Random(seed)
    total = 0
    for i in range(files):
        code = f"{'sh' if i % 2 else 'sz'}{600000 + i * 7:06d}"
        d = root / f"{code}_{NAMES[i % len(NAMES)]}"
        d.mkdir(parents=True, exist_ok=True)
        p = rnd.uniform(3, 200)
        out = ["日期,开盘,最高,最低,收盘,成交量,成交额"]
        t0 = 730000 + rnd.randint(0, 3000)
        for r in range(rows):
            o = p
            c = max(0.5, o * (1 + rnd.gauss(0, 0.02)))
            h = max(o, c) * (1 + abs(rnd.gauss(0, 0.006)))
            lo = min(o, c) * (1 - abs(rnd.gauss(0, 0.006)))
            v = rnd.randint(10_000, 90_000_000)
            day = time.strftime("%Y-%m-%d", time.gmtime((t0 + r - 719163) * 86400))
            out.append(f"{day},{o:.2f},{h:.2f},{lo:.2f},{c:.2f},{v},{v * c:.2f}")
            p = c
        data = ("\r\n".join(out) + "\r\n").encode("gbk")
        (d / ("日线.csv" if i % 3 else "daily.csv")).write_bytes(data)
        total += len(data)
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=600)
    ap.add_argument("--rows", type=int, default=1650)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pkgbench-") as tmp:
        root, outdir = Path(tmp) / "ds", Path(tmp) / "out"
        root.mkdir()
        outdir.mkdir()
        raw = make_dataset(root, args.files, args.rows)
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(args.runs):
            dest = outdir / "ours.zip"
            t = time.perf_counter()
            pkg = build_zip(root, scan_dataset(root), dest, level=6, threads=2)
            ours.append(time.perf_counter() - t)
            ours_size = pkg.size
            dest.unlink()
            zdest = outdir / "zip.zip"
            t = time.perf_counter()
            subprocess.run(["zip", "-r", "-q", "-6", str(zdest), "."], cwd=root, check=True)
            theirs.append(time.perf_counter() - t)
            zip_size = zdest.stat().st_size
            zdest.unlink()
        mo, mz = statistics.median(ours), statistics.median(theirs)
        print(f"dataset: {args.files} files, {raw / 1e6:.1f} MB raw")
        print(f"sizes:   build_zip {ours_size / 1e6:.1f} MB ({ours_size / raw:.1%} of raw), "
              f"zip {zip_size / 1e6:.1f} MB ({zip_size / raw:.1%})")
        print("build_zip runs: " + ", ".join(f"{x:.3f}" for x in ours) + f"  median {mo:.3f}s")
        print("zip -r -6 runs: " + ", ".join(f"{x:.3f}" for x in theirs) + f"  median {mz:.3f}s")
        print(f"ratio build_zip/zip = {mo / mz:.2f}")
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
