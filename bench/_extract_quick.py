"""Quick benchmark: extract_safe vs `unzip -o -q` on a stock-like package.

Builds ~600 GBK CSV files (~60 MB) in per-stock folders with Chinese names,
zips them with `zip -r -q`, then times extraction into a fresh directory,
alternating the two tools, and prints medians and the ratio (target <= 0.9).

Run: .venv/bin/python bench/_extract_quick.py [runs]
"""

from __future__ import annotations

import hashlib
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datahubsync.datasets.archive import extract_safe  # noqa: E402

STOCKS = ["贵州茅台", "平安银行", "招商银行", "五粮液", "宁德时代", "比亚迪", "中国平安", "万科A"]
TARGET_BYTES = 60 * 1024 * 1024
N_FILES = 600


def build_tree(root: Path) -> int:
    rnd = random.Random(42)
    per_file = TARGET_BYTES // N_FILES
    total = 0
    for i in range(N_FILES):
        code = 600000 + i // 6
        folder = root / f"{code}_{STOCKS[(i // 6) % len(STOCKS)]}"
        folder.mkdir(exist_ok=True)
        lines = ["日期,代码,名称,开盘,最高,最低,收盘,成交量,成交额"]
        size = 0
        day = 0
        while size < per_file:
            o = rnd.uniform(5, 200)
            row = (
                f"2020-{day // 28 % 12 + 1:02d}-{day % 28 + 1:02d},{code},{STOCKS[i % 8]},"
                f"{o:.2f},{o * 1.03:.2f},{o * 0.97:.2f},{rnd.uniform(o * 0.97, o * 1.03):.2f},"
                f"{rnd.randint(10_000, 50_000_000)},{rnd.uniform(1e6, 1e10):.2f}"
            )
            lines.append(row)
            size += len(row) + 1
            day += 1
        data = "\n".join(lines).encode("gbk")
        (folder / f"日线_{i % 6}.csv").write_bytes(data)
        total += len(data)
    return total


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory(prefix="extract_bench_") as tmp:
        work = Path(tmp)
        src = work / "src"
        src.mkdir()
        total = build_tree(src)
        pkg = work / "pkg.zip"
        subprocess.run(["zip", "-r", "-q", str(pkg), "."], cwd=src, check=True)
        with zipfile.ZipFile(pkg) as zf:
            members = len(zf.infolist())
        print(
            f"{N_FILES} files, {total / 1e6:.1f} MB raw, zip {pkg.stat().st_size / 1e6:.1f} MB, "
            f"{members} members"
        )

        times: dict[str, list[float]] = {"extract_safe": [], "unzip": []}
        for run in range(runs):
            for tool in times:
                dest = work / f"{tool}_{run}"
                dest.mkdir()
                t0 = time.perf_counter()
                if tool == "unzip":
                    subprocess.run(["unzip", "-o", "-q", str(pkg), "-d", str(dest)], check=True)
                else:
                    extract_safe(pkg, dest)
                times[tool].append(time.perf_counter() - t0)
                if run == 0:
                    times_digest = digest(dest)
                    print(f"  {tool:12} tree sha256 {times_digest[:16]}")
                shutil.rmtree(dest)

        med = {tool: statistics.median(ts) for tool, ts in times.items()}
        for tool, ts in times.items():
            print(f"{tool:12} median {med[tool]:.3f}s  runs {', '.join(f'{t:.3f}' for t in ts)}")
        print(
            f"ratio extract_safe/unzip = {med['extract_safe'] / med['unzip']:.2f} (target <= 0.90)"
        )


if __name__ == "__main__":
    main()
