"""core.pipelined: GETs written ahead of their answers, against a scripted raw HTTP server
that can close, cut, stall or lie at any answer."""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from datahubsync.core.pipelined import Abandon, PipelinedGets, TooLong
from tests.scripted_http import ENDLESS, HANG, Cut, Make, Scripted, body_of, ok, open_sockets


@dataclass
class Record:
    """A Receiver that keeps what it was told, per index."""

    abandon_at: set[int] = field(default_factory=set)
    status: dict[int, int] = field(default_factory=dict)
    bodies: dict[int, bytes] = field(default_factory=dict)
    done: list[int] = field(default_factory=list)
    failed: dict[int, BaseException] = field(default_factory=dict)

    def begin(self, index: int, status: int, headers: Mapping[str, str]) -> None:
        assert index not in self.status, f"answer {index} began twice"
        self.status[index] = status
        self.bodies[index] = b""
        if index in self.abandon_at:
            raise Abandon

    def body(self, index: int, data: bytes) -> None:
        self.bodies[index] += data

    def end(self, index: int) -> None:
        self.done.append(index)

    def broken(self, index: int, exc: BaseException) -> None:
        assert index not in self.failed, f"answer {index} broken twice"
        self.failed[index] = exc


PATHS = [f"/files/p{n}.jpg" for n in range(40)]


def fetch(server: Scripted, record: Record, timeout: float = 30,
          paths: list[str] = PATHS) -> PipelinedGets:
    gets = PipelinedGets(timeout)
    gets.get(server.url, paths, {"Authorization": "Bearer t"}, record)
    return gets


def all_whole(record: Record, but: set[int] = frozenset()) -> bool:
    return (sorted(record.done) == [n for n in range(len(PATHS)) if n not in but]
            and all(record.bodies[n] == body_of(p) for n, p in enumerate(PATHS)
                    if n not in but))


def test_all_answers_in_order_on_one_connection(scripted: Make) -> None:
    server = scripted(lambda path, _n: ok(body_of(path)))
    record = Record()
    fetch(server, record)
    assert record.done == list(range(len(PATHS))) and all_whole(record)
    assert server.connections == 1 and server.paths == PATHS
    assert not record.failed


def test_requests_are_written_ahead_of_their_answers(scripted: Make) -> None:
    """When the server answers the first request, the next ones have arrived already."""
    server = scripted(lambda path, _n: ok(body_of(path)))
    fetch(server, Record(), paths=PATHS[:10])
    assert server.connections == 1
    assert server.queued[0] == 9  # one write carried all ten


def test_a_server_hanging_up_between_answers_gets_the_rest_again(scripted: Make) -> None:
    server = scripted(lambda path, n: None if n == 7 else ok(body_of(path)))
    record = Record()
    fetch(server, record)
    assert all_whole(record) and not record.failed
    assert server.connections == 6  # 7 answers per connection


def test_connection_close_moves_the_rest_to_a_new_connection(scripted: Make) -> None:
    server = scripted(lambda path, n: ok(body_of(path), "Connection: close\r\n" if n == 9
                                         else ""))
    record = Record()
    fetch(server, record)
    assert all_whole(record) and not record.failed
    assert server.connections == 4  # 10 answers per connection


def test_an_answer_cut_mid_body_is_broken_alone(scripted: Make) -> None:
    server = scripted(lambda path, _n: Cut(ok(body_of(path))[:-100]) if path == PATHS[5]
                      else ok(body_of(path)))
    record = Record()
    fetch(server, record)
    assert list(record.failed) == [5] and all_whole(record, but={5})
    assert 5 not in record.done
    assert body_of(PATHS[5]).startswith(record.bodies[5])
    assert server.connections == 2


def test_a_malformed_answer_is_broken_alone(scripted: Make) -> None:
    server = scripted(lambda path, _n: b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"
                      if path == PATHS[3] else ok(body_of(path)))
    record = Record()
    fetch(server, record)
    assert list(record.failed) == [3] and all_whole(record, but={3})


def test_endless_headers_stop_at_the_bound(scripted: Make) -> None:
    server = scripted(lambda path, _n: ENDLESS if path == PATHS[2] else ok(body_of(path)))
    record = Record()
    fetch(server, record)
    assert list(record.failed) == [2] and isinstance(record.failed[2], TooLong)
    assert "headers are over" in str(record.failed[2])
    assert all_whole(record, but={2})
    # the client stopped reading soon after the bound: the server could not send it all
    assert server.endless_sent < 64 * 1024 * 1024


def test_an_abandoned_answer_closes_the_connection_and_the_rest_go_on(
        scripted: Make) -> None:
    server = scripted(lambda path, _n: ok(body_of(path)))
    record = Record(abandon_at={4, 30})
    fetch(server, record)
    assert all_whole(record, but={4, 30}) and not record.failed
    assert server.connections == 3
    assert server.paths.count(PATHS[5]) >= 1 and set(server.paths) == set(PATHS)


def test_an_answer_nobody_asked_for_ends_the_connection(scripted: Make) -> None:
    server = scripted(lambda path, _n: ok(body_of(path)) * 2 if path == PATHS[39]
                      else ok(body_of(path)))
    record = Record()
    fetch(server, record)
    assert all_whole(record) and not record.failed


def test_a_server_that_is_not_there_fails_every_request_once() -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    record = Record()
    PipelinedGets(30).get(f"http://127.0.0.1:{port}", PATHS, {}, record)
    assert sorted(record.failed) == list(range(len(PATHS))) and not record.done
    assert all(isinstance(exc, ConnectionRefusedError) for exc in record.failed.values())


def test_a_server_that_stops_answering_fails_the_rest_after_one_timeout(
        scripted: Make) -> None:
    """One read timeout for all that is left, not one per request."""
    server = scripted(lambda path, _n: HANG if path == PATHS[10] else ok(body_of(path)))
    record = Record()
    fetch(server, record, timeout=1.0)
    assert sorted(record.done) == list(range(10))
    assert sorted(record.failed) == list(range(10, len(PATHS)))
    assert all(isinstance(exc, TimeoutError) for exc in record.failed.values())
    assert server.connections == 1


def test_a_receiver_bug_is_raised_not_taken_for_a_broken_connection(scripted: Make) -> None:
    server = scripted(lambda path, _n: ok(body_of(path)))

    class Buggy(Record):
        def body(self, index: int, data: bytes) -> None:
            raise KeyError("bug")

    with pytest.raises(KeyError):
        fetch(server, Buggy())


def test_a_thread_releases_its_connections(scripted: Make) -> None:
    server = scripted(lambda path, _n: ok(body_of(path)))
    gets = PipelinedGets(30)
    before = open_sockets()

    def one_thread() -> None:
        gets.get(server.url, PATHS[:3], {}, Record())
        gets.release_thread()

    for _ in range(5):
        thread = threading.Thread(target=one_thread)
        thread.start()
        thread.join()
    assert server.connections == 5
    assert open_sockets() <= before + 1  # the server's accepted socket may linger a moment
    gets.close()
