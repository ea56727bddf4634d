"""One printer interface: text, --json (one document) and --json-lines (status lines, then
the summary), for results, progress and errors alike."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from datahubsync.core.printer import JsonLinesPrinter, JsonPrinter, StatusLines, TextPrinter
from tests.helpers import Hub, client_config, run_cli


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_status_lines_start_throttled_middle_and_end() -> None:
    lines: list[dict[str, Any]] = []
    clock = Clock()
    status = StatusLines(lines.append, clock, every=1.0)
    status.start("alpha", 300)
    for _ in range(3):  # within the same second: no line
        status.advance(10)
    clock.now = 1.5
    status.advance(10)  # a second later: one line with everything done so far
    status.advance(10)
    status.finish("ok")
    assert [(d["done"], d.get("finished", False)) for d in lines] == [
        (0, False), (40, False), (50, True)]
    assert all(d["message_type"] == "status" and d["item"] == "alpha" and d["total"] == 300
               for d in lines)
    assert lines[-1]["note"] == "ok" and lines[-1]["unit"] == "bytes"


def test_the_three_printers_print_one_result_and_one_error_line_each() -> None:
    doc = {"message_type": "summary", "n": 1}
    outputs = {}
    for name, kind in (("text", TextPrinter), ("json", JsonPrinter),
                       ("lines", JsonLinesPrinter)):
        out, err = io.StringIO(), io.StringIO()
        printer = kind(out, err)
        printer.result(doc, lambda: "one\x1b]0;title\x07 thing")
        printer.error("no hub\r\nfake line", 75)
        outputs[name] = (out.getvalue(), err.getvalue())
    assert outputs["text"][0] == "one\\x1b]0;title\\x07 thing\n"  # escaped, never raw
    assert outputs["text"][1].count("\n") == 1 and "datahubsync: error: no hub" in \
        outputs["text"][1]
    assert json.loads(outputs["json"][0]) == doc and outputs["json"][0].count("\n") > 1
    assert outputs["lines"][0].count("\n") == 1 and json.loads(outputs["lines"][0]) == doc
    for name in ("json", "lines"):
        error = json.loads(outputs[name][1])
        assert error == {"message_type": "exit_error", "message": "no hub\r\nfake line",
                         "code": 75}


def test_sync_json_lines_prints_status_then_the_summary(hub: Hub, tmp_path: Path) -> None:
    hub.wait_ready("alpha")
    hub.wait_ready("beta")
    cfg = client_config(tmp_path, hub.url, ["alpha", "beta"])
    result = run_cli(["datasets", "sync", "--json-lines"], config=cfg)
    docs = [json.loads(line) for line in result.out.splitlines()]  # every line is JSON
    kinds = [d["message_type"] for d in docs]
    assert kinds[-1] == "summary" and kinds[:-1] and set(kinds[:-1]) == {"status"}
    assert {d["name"] for d in docs[-1]["datasets"]} == {"alpha", "beta"}
    finished = [d for d in docs if d.get("finished")]
    assert len(finished) == 2  # one per downloaded package
    assert all(d["unit"] == "bytes" and d["done"] == d["total"] and d["total"] > 0
               for d in finished)
    # --json (one document) is unchanged; the same flag before the command name works too
    again = run_cli(["--json-lines", "datasets", "sync"], config=cfg)
    assert json.loads(again.out.strip())["message_type"] == "summary"
    plain = run_cli(["--json", "datasets", "sync"], config=cfg).json()
    assert plain["message_type"] == "summary"


def test_json_lines_error_is_one_json_line_on_stderr(tmp_path: Path) -> None:
    result = run_cli(["datasets", "status", "--json-lines", "--config",
                      str(tmp_path / "none.yaml")], expect=2)
    error = json.loads(result.err.strip().splitlines()[-1])
    assert error["message_type"] == "exit_error" and error["code"] == 2
    assert "config file not found" in error["message"]
