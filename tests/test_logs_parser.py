"""The IPv4 judgement against ``ipaddress`` itself, on boundaries and random addresses."""

from __future__ import annotations

import ipaddress
import random

import pytest

from datahubsync.logs.parser import find_ips, public_ip


def reference(text: str) -> bool:
    address = ipaddress.IPv4Address(text)
    return address.is_global and not address.is_multicast


def test_fast_check_agrees_with_ipaddress() -> None:
    rng = random.Random(1)
    candidates = [rng.getrandbits(32) for _ in range(100_000)]
    special = ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
               "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24",
               "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
               "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32"]
    for net in map(ipaddress.IPv4Network, special):
        for edge in (int(net.network_address), int(net.broadcast_address)):
            candidates += [max(edge - 1, 0), edge, min(edge + 1, 2**32 - 1)]
    for value in candidates:
        text = str(ipaddress.IPv4Address(value))
        assert (public_ip(text.encode()) is not None) == reference(text), text


@pytest.mark.parametrize(("line", "found"), [
    (b"hit from 8.8.8.8:53", ["8.8.8.8"]),
    (b"from 008.008.004.004 x", ["8.8.4.4"]),
    (b"999.1.1.1 1.2.3 1.2.3.4.5 1234.1.1.1", []),
    (b"end of sentence 9.9.9.9.", ["9.9.9.9"]),
    (b"10.0.0.1 192.168.1.1 127.0.0.1 224.0.0.1 100.64.1.1 8.8.8.8", ["8.8.8.8"]),
])
def test_extraction_is_strict(line: bytes, found: list[str]) -> None:
    assert find_ips(line) == found


def test_two_generations_hold_at_most_the_limit_and_keep_what_is_used() -> None:
    from datahubsync.logs.cache import TwoGenerations

    cache: TwoGenerations[int, int] = TwoGenerations(4)
    for key in range(4):
        cache.put(key, key * 10)
    assert len(cache) == 4 and not cache.young  # full: the young generation turned old
    assert cache.get(1) == 10  # a hit moves it to the young generation, not a copy
    assert len(cache) == 4 and 1 not in cache.old
    for key in (5, 6, 7):
        cache.put(key, key)
        assert len(cache) <= 4
        assert cache.get(1) == 10  # used in every generation: it stays
    assert cache.get(0) is None and cache.get(2) is None  # not used since a turn: dropped
    empty: TwoGenerations[int, int] = TwoGenerations(0)
    empty.put(1, 1)
    assert empty.get(1) is None and len(empty) == 0
