"""How a log file is cut into chunks: complete lines only, in order, nothing read twice
into a chunk, a tail without its newline left for later unless the file is final, and
a line longer than ``max_line_bytes`` skipped whole."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from datahubsync.logs.reader import ReadSettings, _complete_chunks


def settings(chunk_bytes: int, max_line_bytes: int) -> ReadSettings:
    return ReadSettings("x", "daily", "line", 60, chunk_bytes, max_line_bytes, 0)


@pytest.mark.parametrize("seed", range(8))
def test_chunks_are_the_files_complete_lines_without_the_long_ones(
        tmp_path: Path, seed: int, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(seed)
    for _ in range(60):
        chunk_bytes = rng.choice([16, 64, 100, 4096])
        max_line = chunk_bytes * rng.choice([1, 2, 5])
        # lines either short enough to be kept or far too long: no boundary case here
        lines = [b"%02d" % n + b"a" * (rng.randint(0, chunk_bytes - 3) if rng.random() < 0.8
                                       else max_line + rng.randint(chunk_bytes, 3 * chunk_bytes))
                 + b"\n" for n in range(rng.randint(0, 40))]
        tail = b"t" * rng.randint(1, chunk_bytes) if rng.random() < 0.5 else b""
        path = tmp_path / "f.log"
        path.write_bytes(b"".join(lines) + tail)
        final = rng.random() < 0.5
        with caplog.at_level(logging.WARNING), path.open("rb") as fh:
            pieces = list(_complete_chunks(fh, settings(chunk_bytes, max_line), final, path))
        at = 0
        for piece in pieces:  # each piece starts where the last one ended
            assert piece.offset == at
            at += piece.consumed
            assert piece.consumed > 0 and len(piece.chunk) in (0, piece.consumed)
        kept = [line for line in lines if len(line) <= max_line]
        assert b"".join(bytes(p.chunk) for p in pieces) == b"".join(kept) + (
            tail if final else b"")
        assert at == len(b"".join(lines)) + (len(tail) if final else 0)
        assert all(bytes(p.chunk).endswith(b"\n") for p in pieces[:-1] if p.chunk)
        skipped = sum(len(line) > max_line for line in lines)
        assert caplog.text.count("was skipped") == skipped
        caplog.clear()


def test_a_chunk_starts_where_the_file_was_left(tmp_path: Path) -> None:
    """The read starts at the file's position (the offset of the last pass), and a tail
    without its newline waits: the next pass reads it again with what follows."""
    path = tmp_path / "f.log"
    path.write_bytes(b"old line\nnew line\nhalf")
    with path.open("rb") as fh:
        fh.seek(len(b"old line\n"))
        pieces = list(_complete_chunks(fh, settings(4096, 65536), False, path))
    assert [(bytes(p.chunk), p.consumed, p.offset) for p in pieces] == [
        (b"new line\n", 9, 9)]
    with path.open("ab") as fh:
        fh.write(b" done\n")
    with path.open("rb") as fh:
        fh.seek(18)
        pieces = list(_complete_chunks(fh, settings(4096, 65536), False, path))
    assert [(bytes(p.chunk), p.offset) for p in pieces] == [(b"half done\n", 18)]
