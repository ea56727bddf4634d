"""How a command's results, progress and errors reach the user: one interface, three forms.

A command builds its result once, as a JSON-able document plus a function that
renders it as text, and hands both to the printer the run chose (restic's
``Printer``): ``TextPrinter`` for people (a bar on a terminal, log lines
otherwise), ``JsonPrinter`` for ``--json`` (one document, errors as one JSON
line on stderr) and ``JsonLinesPrinter`` for ``--json-lines`` (one JSON object
per line on stdout: ``{"message_type": "status", ...}`` while long work runs,
then the result, which for long commands is ``{"message_type": "summary", ...}``).
Nothing here knows a command.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

from datahubsync.core.progress import Progress, make_progress
from datahubsync.core.textsafe import json_printable, printable

# --json-lines: at most one status line per item this often (plus its start and end)
STATUS_EVERY = 1.0


class Printer(Protocol):
    def result(self, document: Any, text: Callable[[], str]) -> None:
        """Print a command's result: ``document`` as JSON, or ``text()`` for people."""
        ...

    def error(self, message: str, code: int) -> None:
        """The one line that says why the command failed (on stderr)."""
        ...

    def progress(self, counting: bool = False) -> Progress:
        """Progress of long work (``counting``: items such as days, not bytes)."""
        ...


def _write(stream: TextIO, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


class TextPrinter:
    """For people: text results, ``datahubsync: error: ...``, a bar on a terminal."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err

    def result(self, document: Any, text: Callable[[], str]) -> None:
        _write(self.out, printable(text()))

    def error(self, message: str, code: int) -> None:
        _write(self.err, f"datahubsync: error: {printable(message, keep_lines=False)}")

    def progress(self, counting: bool = False) -> Progress:
        return make_progress(False, counting)


class JsonPrinter:
    """``--json``: the result as one indented document; progress only in the log."""

    indent: int | None = 2

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err

    def _dump(self, document: Any, indent: int | None) -> str:
        return json_printable(json.dumps(document, indent=indent, ensure_ascii=False,
                                         default=str))

    def result(self, document: Any, text: Callable[[], str]) -> None:
        _write(self.out, self._dump(document, self.indent))

    def error(self, message: str, code: int) -> None:
        _write(self.err, self._dump({"message_type": "exit_error", "message": message,
                                     "code": int(code)}, None))

    def progress(self, counting: bool = False) -> Progress:
        return make_progress(True, counting)  # no bar: log lines, or nothing for counts


class JsonLinesPrinter(JsonPrinter):
    """``--json-lines``: every object on one line; status lines while work runs."""

    indent = None

    def __init__(self, out: TextIO, err: TextIO,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(out, err)
        self.clock = clock

    def progress(self, counting: bool = False) -> Progress:
        return StatusLines(lambda doc: _write(self.out, self._dump(doc, None)), self.clock,
                           "items" if counting else "bytes")


class StatusLines:
    """Progress as ``{"message_type": "status", "item", "unit", "done", "total"}`` lines:
    one at an item's start, at most one per ``every`` seconds while it runs, one at its
    end (with ``"finished": true`` and the note)."""

    def __init__(self, emit: Callable[[dict[str, Any]], None],
                 clock: Callable[[], float] = time.monotonic, unit: str = "bytes",
                 every: float = STATUS_EVERY) -> None:
        self.emit, self.clock, self.unit, self.every = emit, clock, unit, every
        self._item, self._total, self._done, self._last = "", None, 0, 0.0

    def _status(self, **extra: Any) -> None:
        self._last = self.clock()
        self.emit({"message_type": "status", "item": self._item, "unit": self.unit,
                   "done": self._done, "total": self._total, **extra})

    def start(self, item: str, total: int | None) -> None:
        self._item, self._total, self._done = item, total, 0
        self._status()

    def advance(self, amount: int) -> None:
        self._done += amount
        if self.clock() - self._last >= self.every:
            self._status()

    def finish(self, note: str = "") -> None:
        self._status(finished=True, note=note)


def make_printer(json_output: bool, json_lines: bool, out: TextIO, err: TextIO) -> Printer:
    """The printer for the run's output options (``--json-lines`` wins over ``--json``)."""
    if json_lines:
        return JsonLinesPrinter(out, err)
    if json_output:
        return JsonPrinter(out, err)
    return TextPrinter(out, err)
