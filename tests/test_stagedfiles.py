"""core.stagedfiles: a batch of files synced once, then renamed into place."""

from __future__ import annotations

import ctypes
import errno
from pathlib import Path

import pytest

from datahubsync.core.stagedfiles import SYNCFS, StagedFiles


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def counting(calls: list[int], folder: Path):  # noqa: ANN201 - a syncfs stand-in
    def syncfs(fd: int) -> int:
        calls.append(fd)
        assert all(name.endswith(".part") for name in names(folder)), "renamed before the sync"
        assert SYNCFS is not None
        return SYNCFS(fd)
    return syncfs


def test_a_batch_is_synced_once_then_renamed_and_nothing_shows_before(tmp_path: Path) -> None:
    assert SYNCFS is not None, "Linux's C library has syncfs"
    calls: list[int] = []
    placed: list[Path] = []
    with StagedFiles(counting(calls, tmp_path / "sub")) as staged:
        for n in range(5):
            with staged.writer(tmp_path / "sub" / f"{n}.jpg") as writer:
                writer.write(b"x" * n)
        assert len(staged) == 5 and calls == []
        # written and closed, but not under the final names yet
        assert names(tmp_path / "sub") == [f".{n}.jpg.part" for n in range(5)]
        assert staged.commit(placed=placed.append) == {}
    assert len(calls) == 1  # one filesystem, one sync
    assert names(tmp_path / "sub") == [f"{n}.jpg" for n in range(5)]
    assert placed == [tmp_path / "sub" / f"{n}.jpg" for n in range(5)]
    assert (tmp_path / "sub" / "3.jpg").read_bytes() == b"xxx"


def test_a_failed_sync_places_nothing_and_leaves_no_temp_file(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"old")

    def failing(_fd: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    with StagedFiles(failing) as staged:
        for name in ("a.jpg", "b.jpg"):
            with staged.writer(tmp_path / name) as writer:
                writer.write(b"new")
        failed = staged.commit()
    assert sorted(failed) == [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    assert all(exc.errno == errno.EIO for exc in failed.values())
    assert names(tmp_path) == ["a.jpg"] and (tmp_path / "a.jpg").read_bytes() == b"old"


def test_one_failed_rename_fails_only_its_file(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()  # a directory where the file should go: its rename fails
    with StagedFiles() as staged:
        for name in ("a.jpg", "adir", "c.jpg"):
            with staged.writer(tmp_path / name) as writer:
                writer.write(b"pic")
        failed = staged.commit()
    assert list(failed) == [tmp_path / "adir"]
    assert names(tmp_path) == ["a.jpg", "adir", "c.jpg"] and (tmp_path / "adir").is_dir()


def test_a_batch_left_by_an_exception_removes_its_temp_files(tmp_path: Path) -> None:
    with pytest.raises(ConnectionError), StagedFiles() as staged:
        with staged.writer(tmp_path / "whole.jpg") as writer:
            writer.write(b"whole")
        with staged.writer(tmp_path / "half.jpg") as writer:
            writer.write(b"ha")
            raise ConnectionError("the peer stopped")
    assert names(tmp_path) == []


def test_without_syncfs_each_file_is_fsynced(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    with StagedFiles(syncfs=None) as staged:
        for n in range(3):
            with staged.writer(tmp_path / f"{n}.jpg") as writer:
                writer.write(b"p")
        assert staged.commit() == {}
    assert len(synced) == 3 and names(tmp_path) == ["0.jpg", "1.jpg", "2.jpg"]
