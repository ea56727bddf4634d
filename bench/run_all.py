"""Run every benchmark with its defaults (``make bench``).

Datasets: scale 1.0 (production-sized data, ~650 MB generated under the work
dir) unless ``BENCH_SCALE`` is set; ``BENCH_RUNS`` and ``BENCH_WORKDIR``
override the run count (3) and the work directory (/tmp/dhs-bench). Then the
batch benchmark (1 000 000 rows into PostgreSQL, ``--workers`` 1 and 2) and
the delta-sync benchmark (against rsync).
Results are printed and written to bench/out/*.json.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_batch  # noqa: E402
import bench_datasets  # noqa: E402
import bench_delta  # noqa: E402


def main() -> int:
    argv = [
        "--scale", os.environ.get("BENCH_SCALE", "1.0"),
        "--runs", os.environ.get("BENCH_RUNS", "3"),
        "--workdir", os.environ.get("BENCH_WORKDIR", "/tmp/dhs-bench"),
    ]
    worst = bench_datasets.main(argv + sys.argv[1:])
    runs = ["--runs", os.environ.get("BENCH_RUNS", "3")]
    for workers in ("1", "2"):
        worst = max(worst, bench_batch.main(runs + ["--workers", workers]))
    scale = ["--scale", os.environ.get("BENCH_SCALE", "1.0")]
    worst = max(worst, bench_delta.main(scale + ["--days", os.environ.get("BENCH_RUNS", "3")]))
    return worst


if __name__ == "__main__":
    sys.exit(main())
