"""The fleet at a glance: one row per host, green, amber or red, and why.

A host is
- **green** (``ready``) when its last sync installed every version the hub
  serves now (and nothing else is wrong: no failed run, no picture given up,
  logs not severe);
- **amber** (``waiting``) while it does not hold them yet but the deadline
  (``fleet.ready_by``, 09:00 in the hub's zone) has not passed;
- **red** when the deadline passed without them (``late``), its last sync
  failed (``failed``), or it has not reported for ``fleet.silent_after``
  (``silent``; also a host of ``fleet.expected_hosts`` that never reported).

Everything is computed from the stored reports, the hub's current versions
and ``now``, which callers inject (the API takes ``?at=``), so the same data
can be looked at as of 09:00.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from datahubsync.core.timeutil import parse_hub_time

GREEN, AMBER, RED = "green", "amber", "red"
SYNC = "datasets sync"


@dataclass
class HostRow:
    host: str
    state: str  # ready | waiting | late | failed | silent
    colour: str
    reasons: list[str]
    last_report: str | None
    datasets: list[dict[str, Any]] = field(default_factory=list)
    last_sync: dict[str, Any] | None = None
    pictures: dict[str, Any] | None = None
    logs: dict[str, Any] | None = None
    batch: dict[str, Any] | None = None
    version: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _instant(value: Any, tz: dt.tzinfo) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_hub_time(value, tz)
    except ValueError:
        return None


def holds(installed: Any, current: Any, tz: dt.tzinfo) -> bool:
    """Does a host that installed ``installed`` hold the hub's ``current`` version?"""
    if current is None:
        return True
    if installed == current:
        return True
    a, b = _instant(installed, tz), _instant(current, tz)
    return a is not None and b is not None and a >= b


def deadline(now: dt.datetime, ready_by: str, tz: dt.tzinfo) -> dt.datetime:
    hour, minute = (int(x) for x in ready_by.split(":"))
    local = now.astimezone(tz)
    return local.replace(hour=hour, minute=minute, second=0, microsecond=0)


def host_rows(latest: Iterable[Mapping[str, Any]], current: Mapping[str, str | None],
              now: dt.datetime, tz: dt.tzinfo, ready_by: str, silent_after: float,
              expected: Iterable[str] = ()) -> list[HostRow]:
    """One row per host that reported (or is expected), worst first."""
    by_host: dict[str, dict[str, Mapping[str, Any]]] = {}
    for doc in latest:
        by_host.setdefault(str(doc["host"]), {})[str(doc["command"])] = doc
    for host in expected:
        by_host.setdefault(host, {})
    late = now >= deadline(now, ready_by, tz)
    rows = [_row(host, docs, current, now, tz, late, silent_after)
            for host, docs in by_host.items()]
    order = {RED: 0, AMBER: 1, GREEN: 2}
    return sorted(rows, key=lambda r: (order[r.colour], r.host))


def _ended(doc: Mapping[str, Any]) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(doc.get("ended")))
    except ValueError:
        return None


def _row(host: str, docs: Mapping[str, Mapping[str, Any]], current: Mapping[str, str | None],
         now: dt.datetime, tz: dt.tzinfo, late: bool, silent_after: float) -> HostRow:
    ends = [e for e in (_ended(d) for d in docs.values()) if e is not None]
    newest = max(ends) if ends else None
    reasons: list[str] = []
    sync = docs.get(SYNC)
    datasets = []
    if sync is not None:
        for item in (sync.get("details") or {}).get("datasets") or []:
            name = item.get("name")
            want = current.get(name)
            datasets.append({**item, "current": want,
                             "holds": name in current and holds(item.get("installed"), want,
                                                                tz)})
    pictures = next((d["details"]["pictures"] for d in docs.values()
                     if isinstance(d.get("details"), dict) and "pictures" in d["details"]),
                    None)
    logs = next((d["details"]["logs"] for d in docs.values()
                 if isinstance(d.get("details"), dict) and "logs" in d["details"]), None)
    batch_doc = docs.get("batch run") or docs.get("batch resume")
    batch = (batch_doc.get("details") or {}).get("batch") if batch_doc else None
    if newest is None:
        state = "silent"
        reasons.append("never reported")
    elif (now - newest).total_seconds() > silent_after:
        state = "silent"
        reasons.append(f"no report since {newest.isoformat(timespec='minutes')}")
    elif sync is not None and sync.get("outcome") != "ok":
        state = "failed"
        reasons.append(f"last sync {sync.get('outcome')}: {sync.get('message') or ''}".strip())
    elif datasets and not all(d["holds"] for d in datasets):
        missing = [d["name"] for d in datasets if not d["holds"]]
        state = "late" if late else "waiting"
        reasons.append(("late: " if late else "not yet: ") + ", ".join(missing))
    else:
        state = "ready"
    if pictures and pictures.get("given_up"):
        reasons.append(f"{pictures['given_up']} pictures given up")
    if logs and logs.get("health") == "severe":
        reasons.append("logs severe")
    if batch and batch.get("status") == "failed":
        reasons.append(f"batch task {batch.get('task_id')} failed")
    colour = {"ready": GREEN, "waiting": AMBER}.get(state, RED)
    if colour == GREEN and len(reasons) > 0:
        colour = AMBER
    return HostRow(host, state, colour, reasons,
                   newest.isoformat(timespec="seconds") if newest else None, datasets,
                   {k: sync.get(k) for k in ("outcome", "ended", "seconds", "message")}
                   if sync else None, pictures, logs, batch,
                   next((d.get("version") for d in docs.values()), None))


def conditions(rows: Iterable[HostRow]) -> dict[str, str]:
    """The alert conditions that hold now: ``rule|host`` -> one line saying why."""
    found: dict[str, str] = {}
    for row in rows:
        if row.state == "late":
            found[f"dataset_late|{row.host}"] = f"{row.host}: {'; '.join(row.reasons)}"
        if row.state == "failed":
            found[f"sync_failed|{row.host}"] = f"{row.host}: {row.reasons[0]}"
        if row.state == "silent":
            found[f"host_silent|{row.host}"] = f"{row.host}: {row.reasons[0]}"
        if row.pictures and row.pictures.get("given_up"):
            found[f"pictures_given_up|{row.host}"] = \
                f"{row.host}: {row.pictures['given_up']} pictures given up"
        if row.logs and row.logs.get("health") == "severe":
            found[f"logs_severe|{row.host}"] = f"{row.host}: logs health severe " \
                f"({row.logs.get('pending')} records waiting)"
        if row.batch and row.batch.get("status") == "failed":
            found[f"batch_failed|{row.host}"] = \
                f"{row.host}: batch task {row.batch.get('task_id')} failed"
    return found
