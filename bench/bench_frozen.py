"""Cold start of the frozen binary: onefile vs onedir vs the virtualenv.

Builds both layouts when missing (``packaging/build.sh``), starts a hub on a
small dataset and syncs it once, then times with hyperfine (Debian package
``hyperfine``; warm-up 3, 20 runs): ``--version`` and a ``datasets sync`` with
nothing to do, for each layout. Prints mean ± sd, and the size of each build.

    python bench/bench_frozen.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
from tests.helpers import Hub, client_config, make_dataset  # noqa: E402

LAYOUTS = {"onefile": REPO / "dist" / "datahubsync",
           "onedir": REPO / "dist" / "onedir" / "datahubsync" / "datahubsync"}


def size_mb(path: Path) -> float:
    if path.parent.name == "datahubsync" and path.parent.parent.name == "onedir":
        return sum(p.stat().st_size for p in path.parent.rglob("*") if p.is_file()) / 1e6
    return path.stat().st_size / 1e6


def hyperfine(commands: dict[str, str]) -> dict[str, tuple[float, float]]:
    out = Path(tempfile.mktemp(suffix=".json"))
    argv = ["hyperfine", "-N", "-w", "3", "-r", "20", "--export-json", str(out)]
    for name, command in commands.items():
        argv += ["-n", name, command]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    results = json.loads(out.read_text())["results"]
    out.unlink()
    return {r["command"]: (r["mean"], r["stddev"]) for r in results}


def main() -> int:
    if shutil.which("hyperfine") is None:
        sys.exit("bench_frozen: needs hyperfine (apt-get install hyperfine)")
    for layout, binary in LAYOUTS.items():
        if not binary.exists():
            subprocess.run([str(REPO / "packaging" / "build.sh"), layout], check=True)
    venv = f"{REPO / '.venv' / 'bin' / 'datahubsync'}"
    work = Path(tempfile.mkdtemp(prefix="dhs-bench-frozen-"))
    make_dataset(work / "data" / "alpha", files=20)
    hub = Hub(work, work / "data").start()
    try:
        hub.wait_ready("alpha")
        cfg = client_config(work, hub.url, ["alpha"])
        subprocess.run([venv, "--config", str(cfg), "datasets", "sync"], check=True,
                       capture_output=True)
        commands = {f"{name} --version": f"{path} --version" for name, path in
                    [*LAYOUTS.items(), ("venv", Path(venv))]}
        commands.update({f"{name} no-op sync": f"{path} --config {cfg} datasets sync"
                         for name, path in [*LAYOUTS.items(), ("venv", Path(venv))]})
        results = hyperfine(commands)
    finally:
        hub.stop()
        shutil.rmtree(work, ignore_errors=True)
    for layout, binary in LAYOUTS.items():
        print(f"{layout}: {size_mb(binary):.0f} MB")
    for name, (mean, sd) in results.items():
        print(f"  {name:<22} {mean:.3f} s ± {sd:.3f}")
    (HERE / "out").mkdir(exist_ok=True)
    (HERE / "out" / "frozen.json").write_text(json.dumps(
        {k: {"mean": m, "sd": s} for k, (m, s) in results.items()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
