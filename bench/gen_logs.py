"""Generate sinkhole-like hourly logs (``ramnit_YYYY-MM-DD_HH.log``), seeded.

Each line: time, a sinkhole hit with the bot's address and port, a request
and a user agent (~170 bytes), as the production sinkhole writes them. About
5 % of the addresses are private or reserved, a few have leading zeros, and
IPs repeat the way bots do (a few hundred thousand distinct IPs per GB, most
lines from a small share of them).

    python bench/gen_logs.py --out DIR [--mb 1024] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path


def make_ips(rng: random.Random, n: int) -> list[str]:
    ips = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.04:
            ips.append(f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
        elif kind < 0.05:
            ips.append(f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}")
        elif kind < 0.06:
            ips.append(f"0{rng.randint(11, 99)}.{rng.randint(0, 255)}.0{rng.randint(10, 99)}."
                       f"{rng.randint(1, 254)}")
        else:
            ips.append(f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
                       f"{rng.randint(1, 254)}")
    return ips


AGENTS = ["Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)", "Wget/1.12", "-",
          "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36"]


def generate(out: Path, megabytes: int, seed: int = 7) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    marker = out / f".gen-{megabytes}-{seed}"
    files = sorted(out.glob("ramnit_*.log"))
    if marker.exists() and files:
        return files
    rng = random.Random(seed)
    ips = make_ips(rng, 300_000)
    weights = [1.0 / (i + 1) ** 0.6 for i in range(len(ips))]  # some bots are loud
    target = megabytes * 1024 * 1024
    per_file = target // 24
    files = []
    for hour in range(24):
        path = out / f"ramnit_2025-12-09_{hour:02d}.log"
        written = 0
        with open(path, "w") as fh:
            while written < per_file:
                picks = rng.choices(ips, weights, k=5000)
                block = "".join(
                    f"2025-12-09 {hour:02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} "
                    f"sinkhole hit from {ip}:{rng.randint(1024, 65535)} GET /{rng.randint(0, 9999)}"
                    f".php HTTP/1.1 \"{rng.choice(AGENTS)}\"\n" for ip in picks)
                fh.write(block)
                written += len(block)
        files.append(path)
    marker.touch()
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    files = generate(args.out, args.mb, args.seed)
    print(f"{len(files)} files, {sum(f.stat().st_size for f in files) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
