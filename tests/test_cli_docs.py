"""docs/cli.md is what scripts/gen_cli_docs.py writes from the command tree right now."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import ROOT

REGENERATE = "run `python scripts/gen_cli_docs.py` to regenerate docs/cli.md"


@pytest.fixture(scope="module")
def gen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs",
                                                  ROOT / "scripts" / "gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_reference_is_up_to_date(gen: ModuleType) -> None:
    assert gen.DOCS.exists(), f"docs/cli.md does not exist: {REGENERATE}"
    existing = gen.DOCS.read_text(encoding="utf-8")
    fresh = gen.generate()
    if existing != fresh:
        problems = gen.stale(existing)
        pytest.fail(f"docs/cli.md is stale for: {'; '.join(problems)}. {REGENERATE}",
                    pytrace=False)


def test_every_command_has_help_text(gen: ModuleType) -> None:
    missing = [e.path for e in gen.walk() if not (e.command.help or "").strip()]
    assert not missing, f"commands without a help text (a docstring): {missing}"


def test_every_command_is_in_the_reference(gen: ModuleType) -> None:
    headings = set(gen.split_sections(gen.DOCS.read_text(encoding="utf-8"))[1])
    absent = [e.path for e in gen.walk() if e.path not in headings]
    assert not absent, f"commands missing from docs/cli.md: {absent}; {REGENERATE}"
    assert len(list(gen.walk())) > 1, "the walk found no sub-commands"


def test_check_names_the_stale_command(gen: ModuleType, tmp_path: Path) -> None:
    fresh = gen.generate()
    title = "## datahubsync datasets sync\n"
    assert title in fresh
    stale = tmp_path / "cli.md"
    stale.write_text(fresh.replace(title, title + "\nAn old sentence.\n", 1), encoding="utf-8")
    assert gen.main(["--check", "--output", str(stale)]) == 1
    assert gen.stale(stale.read_text(encoding="utf-8")) == [
        "datahubsync datasets sync (out of date)"]
    stale.write_text(fresh, encoding="utf-8")
    assert gen.main(["--check", "--output", str(stale)]) == 0
