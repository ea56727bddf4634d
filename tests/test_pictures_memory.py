r"""Small pictures answered from memory: the copies (``core/hotfiles``) and ``/files`` in a
real ``serve`` using them — the same answer as FileResponse's, never a stale one, bounded,
and a client that stops reading still dropped after ``serve.send_timeout``."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from datahubsync.core.hotfiles import HotFiles
from tests.pictures_serve_kit import TOKEN, PictureHub, start_picture_hub
from tests.traversal_corpus import file_url_path

A = "D:\\pic\\2025\\10\\01\\a.jpg"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HIT = {"result": "hit"}
MISS = {"result": "miss"}
MEMORY = "datahubsync_pictures_memory_total"


def _names(path: str, st: os.stat_result) -> str:
    return f"{path}:{st.st_size}"


def _write(path: Path, data: bytes) -> os.stat_result:
    path.write_bytes(data)
    return os.lstat(path)


def test_a_copy_is_used_only_while_the_file_is_unchanged(tmp_path: Path) -> None:
    hot = HotFiles(1 << 20, 1 << 20, _names)
    path = tmp_path / "a.jpg"
    st = _write(path, b"first-version")
    first = hot.get("a", str(path), st)
    assert first is not None and first.data == b"first-version"
    assert first.meta == f"a:{len(b'first-version')}"  # described once, when read
    assert (hot.hits, hot.misses) == (0, 1)
    again = hot.get("a", str(path), os.lstat(path))
    assert again is first and (hot.hits, hot.misses) == (1, 1)

    # rewritten in place with the same size and its old times put back: ctime moved
    path.write_bytes(b"other-version")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    now = os.lstat(path)
    assert (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    fresh = hot.get("a", str(path), now)
    assert fresh is not None and fresh.data == b"other-version"
    assert (hot.hits, hot.misses, len(hot), hot.held) == (1, 2, 1, len(b"other-version"))

    os.chmod(path, 0o600)  # a chmod alone moves ctime too: read again
    assert hot.get("a", str(path), os.lstat(path)).data == b"other-version"  # type: ignore[union-attr]
    assert hot.misses == 3


def test_a_file_replaced_after_its_stat_is_not_kept(tmp_path: Path) -> None:
    hot = HotFiles(1 << 20, 1 << 20, _names)
    path = tmp_path / "a.jpg"
    old = _write(path, b"old")
    (tmp_path / "new").write_bytes(b"new")
    os.replace(tmp_path / "new", path)  # between the caller's lstat and the read
    assert hot.get("a", str(path), old) is None
    assert len(hot) == 0 and hot.held == 0
    path.unlink()
    assert hot.get("a", str(path), old) is None  # vanished: the caller answers as without


def test_the_bytes_held_stay_under_the_bound_least_recently_used_first(tmp_path: Path) -> None:
    size = 1000
    hot = HotFiles(3 * size, size, _names)
    stats = {name: _write(tmp_path / name, name.encode() * size) for name in "abcd"}

    def get(name: str) -> bytes | None:
        copy = hot.get(name, str(tmp_path / name), stats[name])
        return None if copy is None else copy.data

    for name in "abc":
        assert get(name) == name.encode() * size
    assert get("a") is not None and hot.hits == 1  # a is now the most recently used
    assert get("d") is not None  # b leaves: used least recently
    assert hot.held == 3 * size and len(hot) == 3
    hits = hot.hits
    assert get("a") and get("c") and get("d") and hot.hits == hits + 3
    assert get("b") is not None and hot.hits == hits + 3  # read again, a miss
    assert hot.held <= hot.max_bytes


def test_a_file_over_the_per_file_bound_or_a_cache_of_zero_is_not_kept(tmp_path: Path) -> None:
    st = _write(tmp_path / "big.jpg", b"x" * 2000)
    hot = HotFiles(1 << 20, 1000, _names)
    assert hot.get("big", str(tmp_path / "big.jpg"), st) is None and len(hot) == 0
    off = HotFiles(0, 1 << 20, _names)
    assert not off.enabled and off.get("big", str(tmp_path / "big.jpg"), st) is None


@pytest.fixture
def pics(tmp_path: Path) -> Iterator[PictureHub]:
    server = start_picture_hub(tmp_path, picture_bytes=200_000, workers=1)
    try:
        yield server
    finally:
        server.hub.stop()


def _connect(pics: PictureHub) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", int(pics.url.rsplit(":", 1)[1]), timeout=20)


def _get(conn: http.client.HTTPConnection, target: str,
         headers: dict[str, str] | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    conn.request("GET", target, headers={**AUTH, **(headers or {})})
    response = conn.getresponse()
    body = response.read()
    kept = sorted((k, v) for k, v in response.getheaders() if k != "Date")
    return response.status, kept, body


def _local(pics: PictureHub, client_path: str) -> Path:
    return pics.tree.root / client_path.split("\\", 2)[2].replace("\\", "/")


def test_answers_from_memory_are_filereponses_answers_and_are_counted(pics: PictureHub) -> None:
    conn = _connect(pics)
    try:
        for client_path, data in pics.tree.files.items():
            url = file_url_path(client_path)
            plain = _get(conn, url)  # from memory (read first)
            assert plain[0] == 200 and plain[2] == data, client_path
            # a conditional request that cannot match is answered by FileResponse, whole
            assert _get(conn, url, {"If-None-Match": '"other"'}) == plain, client_path
            assert _get(conn, url) == plain, client_path  # from memory, a hit
        etag = {k.lower(): v for k, v in plain[1]}["etag"]
        assert _get(conn, url, {"If-None-Match": etag})[0] == 304  # conditionals still work
        assert _get(conn, url, {"Range": "bytes=0-9"})[2] == data[:10]
    finally:
        conn.close()
    files = len(pics.tree.files)
    assert pics.wait_metric(MEMORY, files, **HIT) == files
    assert pics.metric(MEMORY, **MISS) == files
    sent = pics.metric("datahubsync_pictures_files_sent_total", transport="http")
    assert sent == 3 * files + 1  # every 200/206 counted once, whichever way it was sent


def test_a_changed_or_removed_file_is_never_answered_from_an_old_copy(pics: PictureHub) -> None:
    url, path = file_url_path(A), _local(pics, A)
    conn = _connect(pics)
    try:
        assert _get(conn, url)[2] == pics.tree.files[A]
        assert _get(conn, url)[2] == pics.tree.files[A]  # now held in memory
        st = os.lstat(path)
        changed = os.urandom(st.st_size)
        path.write_bytes(changed)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
        assert _get(conn, url)[2] == changed
        # replaced by a symlink to a file elsewhere in the root: that file's bytes
        other = _local(pics, "D:\\pic\\2025\\10\\01\\b.jpg")
        path.unlink()
        path.symlink_to(other.name)
        assert _get(conn, url)[2] == other.read_bytes()
        path.unlink()
        status, _, body = _get(conn, url)
        assert (status, body) == (404, b"")
    finally:
        conn.close()


def test_a_client_that_stops_reading_a_copy_in_memory_is_dropped(tmp_path: Path) -> None:
    """A 1 MiB picture (the largest kept in memory) read once to keep it, then asked for
    by a client that reads nothing: serve drops it after serve.send_timeout."""
    size = 1024 * 1024
    picture_hub = start_picture_hub(tmp_path, picture_bytes=size, workers=1, send_timeout=1)
    try:
        port = int(picture_hub.url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        assert _get(conn, file_url_path(A))[0] == 200  # one worker: now in its memory
        conn.close()
        assert picture_hub.wait_metric(MEMORY, 1, **MISS) == 1
        request = (b"GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                   % (file_url_path(A).encode(), TOKEN.encode())) * 8
        received = picture_hub.unread_until_dropped(request)  # eight answers, none read
        assert received < 8 * size / 2, "most of the answers were never sent"
        assert picture_hub.metric(MEMORY, **HIT) >= 1  # it was a copy in memory
    finally:
        picture_hub.hub.stop()
