"""Generate synthetic datasets shaped like the production ones the hub serves.

* ``stock-trading-data-pro``: 5 600 daily-quote CSVs, ~600 MB, one per stock, in
  per-exchange / per-stock folders (``sh/sh600000_浦发银行/sh600000.csv``; about
  half the stock folders carry a Chinese name).
* ``stock-fin-data-xbx``: 3 200 quarterly financial-statement CSVs, ~30 MB.
* ``stock-etf-trading-data``: 200 ETF daily-quote CSVs, ~20 MB.

Contents look like the real files: a GBK-encoded Chinese header, CRLF line
endings, random-walk prices with 2 (ETF: 3) decimals, volumes in lots of 100
shares and turnover = volume x VWAP, so deflate -6 shrinks the quote files to
about 30 % of their size, as it does the production ones. File sizes vary
(log-normal, i.e. long-listed stocks have years of history, new ones a few
months) but always end on the same last trading day.

Everything is seeded, so the same ``--seed``/``--scale`` gives byte-identical
file contents. ``--scale`` multiplies both the file count and the total size
(per-file sizes stay realistic). Speed: each dataset draws contiguous slices
from a pool of pre-formatted row tails, so a file is assembled by ``bytes.join``
in C rather than formatted row by row in Python (~600 MB in well under a minute).

Usage::

    python bench/gen_dataset.py --out /tmp/data [--scale 0.1] [--datasets NAME,...]

A marker ``OUT/.gen-NAME.json`` records what was generated (bench_datasets.py
uses it to reuse data generated with the same parameters).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import repeat
from pathlib import Path

GENERATOR_VERSION = 1
MB = 1_000_000
DEFAULT_SEED = 20240628
LAST_DAY = dt.date(2024, 6, 28)
FIRST_DAY = dt.date(1990, 12, 19)  # the Shanghai exchange's first trading day

# Common GBK characters for synthetic company names.
_NAME_CHARS = ("中国平安招商浦发万科贵州茅台宁德时代比亚迪五粮液华夏东方海天格力美的光伏通信"
               "证券保险汽车化工钢铁有色煤炭建材农业传媒软件半导体新材料长江黄河南北京沪深广州"
               "杭州苏州天津重庆四川云南山东江西湖北湖南福建安徽河南陕西金龙凤华兴盛德永泰康")
_NAME_SUFFIXES = ("股份", "科技", "银行", "集团", "电子", "医药", "A", "B", "能源", "控股", "", "")
_ETF_KINDS = ("沪深300ETF", "中证500ETF", "创业板ETF", "科创50ETF", "红利ETF", "黄金ETF",
              "证券ETF", "医药ETF", "半导体ETF", "新能源ETF", "国债ETF", "恒生ETF")

_ETF_FIRMS = ("华夏", "易方达", "南方", "嘉实", "广发", "富国", "博时", "华泰柏瑞", "国泰")

NAMES = ("stock-trading-data-pro", "stock-fin-data-xbx", "stock-etf-trading-data")


@dataclass(frozen=True)
class Generated:
    name: str
    scale: float
    seed: int
    files: int
    bytes: int
    seconds: float
    generator_version: int = GENERATOR_VERSION


def trading_days() -> list[bytes]:
    """Weekdays from the first trading day to LAST_DAY, as b'YYYY-MM-DD,'."""
    out: list[bytes] = []
    d, one = FIRST_DAY, dt.timedelta(days=1)
    while d <= LAST_DAY:
        if d.weekday() < 5:
            out.append(d.strftime("%Y-%m-%d,").encode("ascii"))
        d += one
    return out


def quote_pool(rnd: random.Random, n: int, level: float, decimals: int,
               vol_mu: float) -> list[bytes]:
    """n row tails b'open,high,low,close,volume,amount\\r\\n' from a random walk.

    The price level is re-drawn every 4 000 rows (a different stock), log-normal
    around ``level``; volume is in lots of 100; amount = volume x VWAP rounded to
    0.001, formatted with 2 decimals (as the exchange feeds give it).
    """
    price = f"{{:.{decimals}f}},"
    fmt = price * 4 + "{},{:.2f}\r\n"
    gauss, lognorm = rnd.gauss, rnd.lognormvariate
    floor = 10 ** -decimals * 50
    tails: list[bytes] = []
    append = tails.append
    p = level
    for i in range(n):
        if i % 4000 == 0:
            p = math.exp(gauss(math.log(level), 0.8))
        o = p * (1 + gauss(0, 0.006))
        c = max(floor, p * (1 + gauss(0, 0.015)))
        h = max(o, c) * (1 + abs(gauss(0, 0.008)))
        lo = min(o, c) * (1 - abs(gauss(0, 0.008)))
        v = int(lognorm(vol_mu, 0.7)) * 100
        amount = v * round((o + c + h + lo) / 4, 3)
        append(fmt.format(o, h, lo, c, v, amount).encode("ascii"))
        p = c
    return tails


def row_counts(rnd: random.Random, files: int, target_bytes: int, row_bytes: float,
               max_rows: int, min_rows: int = 20, sigma: float = 0.8) -> list[int]:
    """Log-normal rows per file whose total is ~target_bytes (capped per file)."""
    weights = [rnd.lognormvariate(0, sigma) for _ in range(files)]
    want = target_bytes / row_bytes
    rows = [0] * files
    free = list(range(files))
    budget = want
    for _ in range(4):  # cap, then hand the shortfall to the uncapped files
        total_w = sum(weights[i] for i in free) or 1.0
        capped = []
        for i in free:
            rows[i] = max(min_rows, min(max_rows, round(budget * weights[i] / total_w)))
            if rows[i] == max_rows:
                capped.append(i)
        if not capped:
            break
        budget -= max_rows * len(capped)
        free = [i for i in free if i not in set(capped)]
    return rows


def chinese_name(rnd: random.Random) -> str:
    return rnd.choice(_NAME_CHARS) + rnd.choice(_NAME_CHARS) + rnd.choice(_NAME_SUFFIXES)


def stock_codes(rnd: random.Random, n: int) -> list[tuple[str, str]]:
    """n unique (exchange, code) pairs, about 40 % sh, 52 % sz, 8 % bj."""
    ranges = {"sh": [(600000, 606000), (688000, 689000)],
              "sz": [(1, 4000), (300000, 302000)],
              "bj": [(830000, 874000)]}
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    while len(out) < n:
        r = rnd.random()
        ex = "sh" if r < 0.40 else "sz" if r < 0.92 else "bj"
        lo, hi = rnd.choice(ranges[ex])
        code = f"{ex}{rnd.randrange(lo, hi):06d}"
        if code not in seen:
            seen.add(code)
            out.append((ex, code))
    out.sort(key=lambda t: t[1])
    return out


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def gen_trading(root: Path, scale: float, seed: int) -> tuple[int, int]:
    """stock-trading-data-pro: one daily-quote file per stock."""
    rnd = random.Random(f"{seed}-trading")
    files = max(1, round(5600 * scale))
    target = 600 * MB * scale
    days = trading_days()
    tails = quote_pool(rnd, 200_000, level=12.0, decimals=2, vol_mu=10.5)
    mean_tail = sum(map(len, tails[:20_000])) / 20_000
    header = "交易日期,股票代码,开盘价,最高价,最低价,收盘价,成交量,成交额\r\n".encode("gbk")
    rows = row_counts(rnd, files, target, 11 + 9 + mean_tail, len(days))
    total = 0
    for (ex, code), n in zip(stock_codes(rnd, files), rows, strict=True):
        folder = f"{code}_{chinese_name(rnd)}" if rnd.random() < 0.5 else code
        off = rnd.randrange(len(tails) - n)
        body = b"".join(map(b"".join, zip(days[-n:], repeat(code.encode() + b","),
                                          tails[off:off + n])))
        data = header + body
        _write(root / ex / folder / f"{code}.csv", data)
        total += len(data)
    return files, total


def gen_etf(root: Path, scale: float, seed: int) -> tuple[int, int]:
    """stock-etf-trading-data: ETF daily quotes, fund name column, 3 decimals."""
    rnd = random.Random(f"{seed}-etf")
    files = max(1, round(200 * scale))
    target = 20 * MB * scale
    days = trading_days()[-5000:]  # ETFs are younger
    tails = quote_pool(rnd, 50_000, level=1.5, decimals=3, vol_mu=11.5)
    mean_tail = sum(map(len, tails[:10_000])) / 10_000
    header = ("交易日期,基金代码,基金名称,开盘价,最高价,最低价,收盘价,成交量,"
              "成交额\r\n").encode("gbk")
    rows = row_counts(rnd, files, target, 11 + 9 + 14 + mean_tail, len(days), min_rows=60)
    total = 0
    for i, n in enumerate(rows):
        ex = "sh" if i % 3 else "sz"
        code = f"{ex}{(510000 if ex == 'sh' else 159000) + i * 7 % 1000:06d}"
        name = f"{rnd.choice(_ETF_FIRMS)}{rnd.choice(_ETF_KINDS)}"
        prefix = f"{code},{name},".encode("gbk")
        off = rnd.randrange(len(tails) - n)
        body = b"".join(map(b"".join, zip(days[-n:], repeat(prefix), tails[off:off + n])))
        data = header + body
        _write(root / ex / f"{code}_{name}.csv" if i % 2 else root / ex / f"{code}.csv", data)
        total += len(data)
    return files, total


def gen_fin(root: Path, scale: float, seed: int) -> tuple[int, int]:
    """stock-fin-data-xbx: quarterly statements, ~9 KB per stock, per-exchange folders."""
    rnd = random.Random(f"{seed}-fin")
    files = max(1, round(3200 * scale))
    header = ("股票代码,报告期,公告日期,营业总收入,营业利润,利润总额,净利润,归母净利润,"
              "总资产,总负债,经营活动现金流量净额,基本每股收益\r\n").encode("gbk")
    quarters = [(y, m, d) for y in range(1993, 2025)
                for (m, d) in ((3, 31), (6, 30), (9, 30), (12, 31))][:-2]
    target_per_file = 30 * MB / 3200
    total = 0
    for ex, code in stock_codes(rnd, files):
        base = rnd.lognormvariate(20, 1.2)
        assets = base * rnd.uniform(2, 6)
        lines: list[str] = []
        size = len(header)
        start = rnd.randrange(0, 24)
        limit = target_per_file * rnd.uniform(0.6, 1.4)
        for y, m, d in quarters[start:]:
            rev = base * (m / 12) * rnd.uniform(0.8, 1.2)
            op = rev * rnd.gauss(0.1, 0.06)
            pre = op * rnd.uniform(0.95, 1.05)
            net = pre * rnd.uniform(0.7, 0.85)
            parent = net * rnd.uniform(0.9, 1.0)
            debt = assets * rnd.uniform(0.3, 0.7)
            cash = net * rnd.gauss(1.0, 0.5)
            eps = parent / (base * 0.8)
            pub = dt.date(y, m, d) + dt.timedelta(days=rnd.randrange(20, 110))
            line = (f"{code},{y}{m:02d}{d:02d},{pub:%Y%m%d},{rev:.2f},{op:.2f},{pre:.2f},"
                    f"{net:.2f},{parent:.2f},{assets:.2f},{debt:.2f},{cash:.2f},{eps:.4f}\r\n")
            lines.append(line)
            size += len(line)
            assets *= rnd.uniform(0.98, 1.05)
            base *= rnd.uniform(0.99, 1.03)
            if size >= limit:
                break
        data = header + "".join(lines).encode("ascii")
        name = f"{code}_{chinese_name(rnd)}.csv" if rnd.random() < 0.3 else f"{code}.csv"
        _write(root / ex / name, data)
        total += len(data)
    return files, total


GENERATORS: dict[str, Callable[[Path, float, int], tuple[int, int]]] = {
    "stock-trading-data-pro": gen_trading,
    "stock-fin-data-xbx": gen_fin,
    "stock-etf-trading-data": gen_etf,
}


def marker_path(out: Path, name: str) -> Path:
    return out / f".gen-{name}.json"


def existing(out: Path, name: str, scale: float, seed: int) -> Generated | None:
    """The marker of an identical earlier generation whose directory is still there."""
    try:
        info = Generated(**json.loads(marker_path(out, name).read_text("utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    same = (info.scale, info.seed, info.generator_version) == (scale, seed, GENERATOR_VERSION)
    return info if same and (out / name).is_dir() else None


def generate(out: Path, name: str, scale: float = 1.0, seed: int = DEFAULT_SEED,
             reuse: bool = False) -> Generated:
    """Write OUT/NAME from scratch (or reuse an identical earlier one); return its stats."""
    if reuse and (info := existing(out, name, scale, seed)) is not None:
        return info
    root = out / name
    marker_path(out, name).unlink(missing_ok=True)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    files, total = GENERATORS[name](root, scale, seed)
    info = Generated(name, scale, seed, files, total, round(time.perf_counter() - t0, 2))
    marker_path(out, name).write_text(json.dumps(asdict(info)) + "\n", "utf-8")
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="data root to write datasets into")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply file counts and sizes (default 1.0 = production size)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--datasets", default=",".join(NAMES),
                    help=f"comma-separated subset of: {', '.join(NAMES)} (default: all)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep a dataset already generated with the same parameters")
    args = ap.parse_args(argv)
    names = [n for n in args.datasets.split(",") if n]
    unknown = [n for n in names if n not in GENERATORS]
    if unknown or args.scale <= 0:
        ap.error(f"unknown dataset(s): {unknown}" if unknown else "--scale must be > 0")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        info = generate(args.out, name, args.scale, args.seed, reuse=args.reuse)
        print(f"{name}: {info.files} files, {info.bytes / MB:.1f} MB "
              f"({info.seconds:.1f}s) -> {args.out / name}", flush=True)
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
