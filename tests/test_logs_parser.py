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


def test_two_generations_hold_at_most_the_limit_and_keep_what_was_moved() -> None:
    from datahubsync.logs.cache import TwoGenerations

    cache: TwoGenerations[int, int] = TwoGenerations(4)
    cache.young.update({k: k for k in range(4)})
    cache.rotate_if_full()
    assert len(cache) == 4 and not cache.young and list(cache.old) == [0, 1, 2, 3]
    cache.young[1] = cache.old.pop(1)  # a hit, as the reader records it
    cache.young.update({5: 5, 6: 6})
    cache.rotate_if_full()  # 1 + 5 + 6 young, 0 2 3 old: full, turn
    assert sorted(cache.old) == [1, 5, 6] and not cache.young and len(cache) <= 4
    empty: TwoGenerations[int, int] = TwoGenerations(0)
    empty.young[1] = 1
    empty.rotate_if_full()
    assert len(empty) == 0
