"""Write docs/cli.md, the command-line reference, from the Click command tree.

    python scripts/gen_cli_docs.py           # (re)write docs/cli.md
    python scripts/gen_cli_docs.py --check   # exit 1 naming the commands whose docs are stale

Everything comes from click's own objects (the contexts ``--help`` builds, the
parameters' help records, the commands' ``format_help_text``/``format_epilog``), so
the reference says what ``--help`` says. Hidden commands and options are left out,
as ``--help`` leaves them out. tests/test_cli_docs.py fails when docs/cli.md is not
what this script would write now.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "cli.md"
PROG = "datahubsync"
# The width ``--help`` wraps at in an 80-column terminal (click: columns - 2); fixed
# so that the output does not depend on the terminal the script runs in.
WIDTH = 78
REGENERATE = "python scripts/gen_cli_docs.py"

INTRO = (
    "# Command-line reference\n"
    "\n"
    f"Every `{PROG}` command, with its options and exit status, as `--help` shows them. "
    f"Generated from the Click command tree by `scripts/gen_cli_docs.py`: do not edit by "
    f"hand, run `{REGENERATE}` after changing a command.\n"
)


@dataclass
class Entry:
    """One command (or group) of the tree, with the context ``--help`` would use."""

    command: click.Command
    ctx: click.Context

    @property
    def path(self) -> str:
        return self.ctx.command_path


def load_root() -> click.Group:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from datahubsync.cli import cli

    return cli


def _context(command: click.Command, name: str, parent: click.Context | None) -> click.Context:
    """The context ``command --help`` runs in: its context_settings, its parent's
    inherited settings (help option names, widths), and a fixed terminal width."""
    settings: dict[str, Any] = dict(command.context_settings)
    if parent is None:
        settings.setdefault("terminal_width", WIDTH)
    return click.Context(command, info_name=name, parent=parent, **settings)


def walk(root: click.Command | None = None) -> Iterator[Entry]:
    """The root, then every visible command depth first, in the order click lists them."""
    root = root if root is not None else load_root()

    def visit(command: click.Command, name: str, parent: click.Context | None) -> Iterator[Entry]:
        ctx = _context(command, name, parent)
        yield Entry(command, ctx)
        if isinstance(command, click.Group):
            for sub_name in command.list_commands(ctx):
                sub = command.get_command(ctx, sub_name)
                if sub is None or sub.hidden:
                    continue
                yield from visit(sub, sub_name, ctx)

    yield from visit(root, PROG, None)


class _Recorder(click.HelpFormatter):
    """Keeps the texts click hands to ``write_text`` (the help text, the epilog)."""

    def __init__(self) -> None:
        super().__init__(width=WIDTH)
        self.texts: list[str] = []

    def write_text(self, text: str) -> None:
        self.texts.append(text)
        super().write_text(text)


def _recorded(method: Any, ctx: click.Context) -> str:
    recorder = _Recorder()
    method(ctx, recorder)
    return "\n\n".join(recorder.texts)


def _paragraphs(text: str) -> list[tuple[bool, str]]:
    """Split ``text`` into paragraphs as click's ``wrap_text`` does: (preformatted, text).

    A paragraph whose first line is ``\\b`` is kept as written (preformatted).
    """
    paragraphs: list[tuple[bool, str]] = []
    lines: list[str] = []

    def flush() -> None:
        if lines:
            raw = lines[0].strip() == "\b"
            paragraphs.append((raw, "\n".join(lines)))
            lines.clear()

    for line in text.expandtabs().splitlines():
        if line:
            lines.append(line)
        else:
            flush()
    flush()
    return paragraphs


_BLOCK_START = re.compile(r"^(#|>|[-*+](\s|$)|\d+[.)](\s|$)|=+\s*$|-+\s*$|```|~~~)")


def _markdown(text: str) -> str:
    """``text`` (a help text or an epilog) as click renders it, in Markdown: wrapped
    paragraphs as paragraphs, ``\\b`` blocks as preformatted blocks."""
    blocks = []
    for raw, paragraph in _paragraphs(text):
        # click renders the text indented by two spaces; render it the same way and
        # take the indentation off again, so that lines break where --help breaks them.
        rendered = click.wrap_text(paragraph, WIDTH, initial_indent="  ",
                                   subsequent_indent="  ", preserve_paragraphs=True)
        lines = [line[2:] if line.startswith("  ") else line for line in rendered.splitlines()]
        if raw:
            blocks.append("```text\n" + "\n".join(lines) + "\n```")
        else:
            # A wrapped line must not start a Markdown block (a list, a heading...).
            blocks.append("\n".join("\\" + line if _BLOCK_START.match(line) else line
                                    for line in lines))
    return "\n\n".join(blocks)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{_cell(text)}`" if text else ""


def _range(kind: click.IntRange | click.FloatRange) -> str:
    if kind.min is None and kind.max is None:
        return ""
    if kind.min is None:
        return f"x{'<' if kind.max_open else '<='}{kind.max}"
    if kind.max is None:
        return f"x{'>' if kind.min_open else '>='}{kind.min}"
    return (f"{kind.min}{'<' if kind.min_open else '<='}x"
            f"{'<' if kind.max_open else '<='}{kind.max}")


def _type(param: click.Parameter) -> str:
    kind = param.type
    if isinstance(param, click.Option) and param.is_flag and param.is_bool_flag:
        text = "flag"
    elif isinstance(kind, click.Choice):
        text = "one of " + ", ".join(_code(str(c)) for c in kind.choices)
    elif isinstance(kind, click.IntRange | click.FloatRange):
        base = "integer" if isinstance(kind, click.IntRange) else "number"
        text = f"{base}, {_code(_range(kind))}" if _range(kind) else base
    elif isinstance(kind, click.Path):
        text = "directory" if kind.dir_okay and not kind.file_okay else (
            "file" if kind.file_okay and not kind.dir_okay else "path")
    else:
        text = kind.name
    if param.nargs == -1:
        text += ", any number"
    elif param.nargs > 1:
        text += f", {param.nargs} values"
    if getattr(param, "multiple", False):
        text += ", repeatable"
    if isinstance(param, click.Argument):
        text = f"argument ({'required' if param.required else 'optional'}): {text}"
    return text


def _default(param: click.Parameter, ctx: click.Context) -> str:
    resilient, ctx.resilient_parsing = ctx.resilient_parsing, True
    try:
        value = param.get_default(ctx, call=False)
    finally:
        ctx.resilient_parsing = resilient
    if value is None or value is click.core.UNSET:
        return ""
    if callable(value):
        return "(dynamic)"
    if isinstance(param, click.Option) and param.is_flag and param.is_bool_flag:
        return "on" if value else ""
    if isinstance(value, list | tuple):
        return _code(", ".join(str(v) for v in value))
    return _code(str(value)) if str(value) else '`""`'


def _params_table(entry: Entry) -> str:
    rows = []
    for param in entry.command.get_params(entry.ctx):
        record = param.get_help_record(entry.ctx)
        if record is None:  # a hidden option
            continue
        names, help_text = record
        rows.append(f"| {_code(names)} | {_type(param)} | {_default(param, entry.ctx)} "
                    f"| {_cell(help_text)} |")
    if not rows:
        return ""
    return "| Option | Type | Default | Help |\n| --- | --- | --- | --- |\n" + "\n".join(rows)


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def _commands_table(entry: Entry) -> str:
    group = entry.command
    if not isinstance(group, click.Group):
        return ""
    rows = []
    for name in group.list_commands(entry.ctx):
        sub = group.get_command(entry.ctx, name)
        if sub is None or sub.hidden:
            continue
        title = f"{entry.path} {name}"
        rows.append(f"| [`{name}`](#{_anchor(title)}) | {_cell(sub.get_short_help_str(200))} |")
    if not rows:
        return ""
    return "| Command | What it does |\n| --- | --- |\n" + "\n".join(rows)


def section(entry: Entry) -> str:
    """The Markdown of one command: heading, usage, help, options, sub-commands, epilog."""
    parts = [f"## {entry.path}",
             "```text\n" + entry.command.get_usage(entry.ctx) + "\n```"]
    help_text = _recorded(entry.command.format_help_text, entry.ctx)
    if help_text:
        parts.append(_markdown(help_text))
    for table in (_params_table(entry), _commands_table(entry)):
        if table:
            parts.append(table)
    epilog = _recorded(entry.command.format_epilog, entry.ctx)
    if epilog:
        parts.append(_markdown(epilog))
    return "\n\n".join(parts) + "\n"


def sections(root: click.Command | None = None) -> dict[str, str]:
    """Command path -> its section of docs/cli.md, in the order of the file."""
    return {entry.path: section(entry) for entry in walk(root)}


def generate(root: click.Command | None = None) -> str:
    return "\n".join([INTRO, *sections(root).values()])


def split_sections(text: str) -> tuple[str, dict[str, str]]:
    """(intro, command path -> section) of a docs/cli.md as :func:`generate` writes it."""
    intro, *rest = re.split(r"^(?=## )", text, flags=re.M)
    found = {}
    for part in rest:
        title = part.splitlines()[0][3:].strip()
        found[title] = part.rstrip("\n") + "\n"
    return intro, found


def stale(existing: str, root: click.Command | None = None) -> list[str]:
    """What differs between ``existing`` and the docs generated now, one line each."""
    want_intro, want = split_sections(generate(root))
    have_intro, have = split_sections(existing)
    problems = []
    if have_intro != want_intro:
        problems.append("the introduction")
    for path, text in want.items():
        if path not in have:
            problems.append(f"{path} (missing)")
        elif have[path] != text:
            problems.append(f"{path} (out of date)")
    problems += [f"{path} (no longer a command)" for path in have if path not in want]
    if not problems and existing != generate(root):
        problems.append("the order of the commands")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when docs/cli.md is not up to date")
    parser.add_argument("--output", type=Path, default=DOCS, help="default: docs/cli.md")
    args = parser.parse_args(argv)
    text = generate()
    where = args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output
    if args.check:
        if not args.output.exists():
            print(f"{where} does not exist: run `{REGENERATE}`", file=sys.stderr)
            return 1
        problems = stale(args.output.read_text(encoding="utf-8"))
        if problems:
            print(f"{where} is stale for: " + "; ".join(problems)
                  + f". Run `{REGENERATE}` to regenerate it.", file=sys.stderr)
            return 1
        print(f"{where} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {where} ({text.count(chr(10) + '## ')} commands)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
