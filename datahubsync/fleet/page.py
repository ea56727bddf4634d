"""The fleet page: one self-contained HTML document (no external assets: the hosts may
have no internet), readable on a phone, refreshing itself, and a history page per host
with small server-rendered SVG charts (start time, duration, bytes of 30 days)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

from datahubsync.fleet.view import HostRow

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;padding:12px;
background:#f6f7f9;color:#1b1f24}
h1{font-size:1.3em;margin:0 0 4px}h2{font-size:1.1em;margin:20px 0 6px}
.meta{color:#57606a;font-size:.9em;margin-bottom:10px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.92em}
th,td{padding:6px 8px;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th{background:#eef0f3;font-weight:600}
tr.green td.state{background:#d8f3dc;color:#14532d}
tr.amber td.state{background:#fff1c2;color:#7a4b00}
tr.red td.state{background:#fbd5d5;color:#8a1c1c}
td.state{font-weight:700;white-space:nowrap}
.ds{display:inline-block;margin:1px 4px 1px 0;padding:1px 5px;border-radius:4px;
background:#eef0f3;font-size:.85em}
.ds.ok{background:#d8f3dc}.ds.old{background:#fbd5d5}
.summary{display:flex;gap:8px;margin:8px 0 12px;flex-wrap:wrap}
.count{padding:6px 10px;border-radius:6px;font-weight:700}
.count.green{background:#d8f3dc}.count.amber{background:#fff1c2}.count.red{background:#fbd5d5}
a{color:#0b5cad}svg{background:#fff;border:1px solid #e3e6ea;max-width:100%}
@media (max-width:700px){td.hide,th.hide{display:none}}
"""


def _page(title: str, body: str, refresh: int) -> str:
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<meta http-equiv=\"refresh\" content=\"{refresh}\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>{body}"
            f"</body></html>")


def _when(value: str | None) -> str:
    if not value:
        return "—"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return escape(value)
    return escape(moment.strftime("%m-%d %H:%M"))


def _dataset_badges(row: HostRow) -> str:
    return "".join(
        f"<span class=\"ds {'ok' if d['holds'] else 'old'}\" title=\"installed "
        f"{escape(str(d.get('installed')))}; hub {escape(str(d.get('current')))}\">"
        f"{escape(str(d.get('name')))}</span>" for d in row.datasets) or "—"


def fleet_page(rows: Sequence[HostRow], packages: Iterable[Mapping[str, Any]],
               now: dt.datetime, ready_by: str, refresh: int = 60) -> str:
    counts = {c: sum(1 for r in rows if r.colour == c) for c in ("green", "amber", "red")}
    summary = "".join(f"<span class=\"count {c}\" id=\"count-{c}\">{n} {label}</span>"
                      for c, n, label in (("green", counts["green"], "ready"),
                                          ("amber", counts["amber"], "waiting"),
                                          ("red", counts["red"], "late / failed / silent")))
    body_rows = []
    for r in rows:
        pictures = (f"backlog {r.pictures.get('backlog', 0)}, given up "
                    f"{r.pictures.get('given_up', 0)}") if r.pictures else "—"
        logs = (f"{r.logs.get('health')}, {r.logs.get('pending', 0)} waiting"
                if r.logs else "—")
        body_rows.append(
            f"<tr class=\"{r.colour}\" data-host=\"{escape(r.host)}\" data-state=\"{r.state}\">"
            f"<td><a href=\"/fleet/host/{quote(r.host, safe='')}\">{escape(r.host)}</a></td>"
            f"<td class=\"state\">{r.state}</td><td>{_dataset_badges(r)}</td>"
            f"<td>{_when(r.last_sync.get('ended') if r.last_sync else None)} "
            f"{escape(str(r.last_sync.get('outcome'))) if r.last_sync else ''}</td>"
            f"<td class=\"hide\">{escape(pictures)}</td><td class=\"hide\">{escape(logs)}</td>"
            f"<td>{escape('; '.join(r.reasons))}</td></tr>")
    package_rows = "".join(
        f"<tr><td>{escape(str(p['name']))}</td><td>{escape(str(p.get('last_updated')))}</td>"
        f"<td class=\"hide\">{escape(str(p.get('built_at') or '—'))}</td>"
        f"<td>{_size(p.get('package_size'))}</td>"
        f"<td class=\"hide\">{escape(_deltas(p))}</td></tr>" for p in packages)
    stamp = escape(now.isoformat(timespec="minutes"))
    body = (f"<h1>Fleet</h1><div class=\"meta\">as of {stamp}"
            f"; ready by {escape(ready_by)}; refreshes every {refresh} s</div>"
            f"<div class=\"summary\">{summary}</div>"
            "<table id=\"hosts\"><thead><tr><th>host</th><th>state</th><th>datasets</th>"
            "<th>last sync</th><th class=\"hide\">pictures</th><th class=\"hide\">logs</th>"
            f"<th>why</th></tr></thead><tbody>{''.join(body_rows)}</tbody></table>"
            "<h2>Packages on this hub</h2><table id=\"packages\"><thead><tr><th>dataset</th>"
            "<th>version</th><th class=\"hide\">built</th><th>size</th>"
            f"<th class=\"hide\">deltas</th></tr></thead><tbody>{package_rows}</tbody></table>")
    return _page("datahubsync fleet", body, refresh)


def _deltas(package: Mapping[str, Any]) -> str:
    return ", ".join(_size(d.get("size")) for d in package.get("deltas") or []) or "—"


def _size(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "—"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def _chart(chart_id: str, title: str, points: Sequence[tuple[str, float]], unit: str,
           width: int = 620, height: int = 120, slots: int = 30) -> str:
    """A small bar chart: one slot per day of the last ``slots`` days (the last is today),
    a bar where the day had a run, labelled with the maximum."""
    if not points:
        return f"<p>no {escape(title)} yet</p>"
    top = max(v for _d, v in points) or 1.0
    last = max(dt.date.fromisoformat(d) for d, _v in points)
    step = (width - 40) / slots
    bars = []
    for day, value in points:
        slot = slots - 1 - (last - dt.date.fromisoformat(day)).days
        if slot < 0:
            continue
        h = (height - 30) * value / top
        x = 30 + slot * step
        bars.append(f"<rect class=\"bar\" x=\"{x:.1f}\" y=\"{height - 15 - h:.1f}\" "
                    f"width=\"{max(step - 2, 1):.1f}\" height=\"{h:.1f}\" fill=\"#4f7cac\">"
                    f"<title>{escape(day)}: {_value(value, unit)}</title></rect>")
    return (f"<svg id=\"{chart_id}\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" "
            f"height=\"{height}\" role=\"img\" aria-label=\"{escape(title)}\">"
            f"<text x=\"4\" y=\"12\" font-size=\"11\">{escape(title)} (max "
            f"{_value(top, unit)}; {slots} days to {last.isoformat()})</text>{''.join(bars)}"
            f"<line x1=\"30\" y1=\"{height - 15}\" x2=\"{width - 10}\" y2=\"{height - 15}\" "
            f"stroke=\"#999\"/></svg>")


def _value(value: float, unit: str) -> str:
    if unit == "B":
        return _size(value)
    if unit == "clock":
        return f"{int(value // 60):02d}:{int(value % 60):02d}"
    return f"{value:.1f} {escape(unit)}"


def host_page(row: HostRow | None, host: str, history: Sequence[Mapping[str, Any]],
              refresh: int = 60) -> str:
    syncs = [h for h in history if h.get("command") == "datasets sync"]
    per_day: dict[str, Mapping[str, Any]] = {}
    for doc in syncs:  # the first sync of each day: the 08:15 one
        day = str(doc.get("started", ""))[:10]
        per_day.setdefault(day, doc)
    days = sorted(per_day)[-30:]

    def start_minutes(doc: Mapping[str, Any]) -> float:
        try:
            moment = dt.datetime.fromisoformat(str(doc["started"]))
        except (KeyError, ValueError):
            return 0.0
        return moment.hour * 60 + moment.minute + moment.second / 60

    def moved(doc: Mapping[str, Any]) -> float:
        items = (doc.get("details") or {}).get("datasets") or []
        return sum(float(i.get("bytes") or 0) for i in items)

    charts = (_chart("chart-start", "sync start",
                     [(d, start_minutes(per_day[d])) for d in days], "clock")
              + _chart("chart-duration", "sync duration",
                       [(d, float(per_day[d].get("seconds") or 0)) for d in days], "s")
              + _chart("chart-bytes", "downloaded",
                       [(d, moved(per_day[d])) for d in days], "B"))
    runs = "".join(
        f"<tr><td>{_when(h.get('ended'))}</td><td>{escape(str(h.get('command')))}</td>"
        f"<td>{escape(str(h.get('outcome')))}</td><td>{escape(str(h.get('seconds')))}</td>"
        f"<td>{escape(str(h.get('message') or ''))}</td></tr>"
        for h in list(reversed(history))[:30])
    why = f" — {escape('; '.join(row.reasons))}" if row and row.reasons else ""
    state = (f"<p class=\"meta\">state: <b>{row.state}</b>{why}</p>" if row
             else "<p class=\"meta\">no report from this host</p>")
    body = (f"<h1>{escape(host)}</h1><p><a href=\"/fleet\">← fleet</a></p>{state}"
            f"<h2>The last 30 days</h2>{charts}<h2>Last runs</h2><table id=\"runs\"><thead>"
            "<tr><th>ended</th><th>command</th><th>outcome</th><th>seconds</th>"
            f"<th>message</th></tr></thead><tbody>{runs}</tbody></table>")
    return _page(f"datahubsync — {host}", body, refresh)
