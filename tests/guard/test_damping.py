"""Brute-force damping with a fake clock: blocks per address, doubling, bounded memory."""

from __future__ import annotations

import ipaddress

from lmgate.guard.damping import MAX_BLOCK_S, Damper, bucket


def test_blocks_at_the_limit_and_only_that_address() -> None:
    d = Damper(limit=3, block_s=10)
    assert d.failed("10.0.0.1", now=0) == 0 and d.failed("10.0.0.1", now=1) == 0
    assert d.blocked_for("10.0.0.1", now=1) == 0
    assert d.failed("10.0.0.1", now=2) == 10
    assert d.blocked_for("10.0.0.1", now=2) == 10
    assert d.blocked_for("10.0.0.2", now=2) == 0
    assert d.blocked_for("10.0.0.1", now=12) == 0


def test_failures_slide_out_of_the_window() -> None:
    d = Damper(limit=3, block_s=10, window_s=60)
    d.failed("a", now=0)
    d.failed("a", now=30)
    assert d.failed("a", now=61) == 0  # the first failure is older than a minute
    assert d.failed("a", now=62) == 10


def test_repeat_offences_double_up_to_a_cap() -> None:
    d = Damper(limit=1, block_s=100)
    blocks = [d.failed("a", now=t * 10_000.0 / 4) for t in range(8)]
    assert blocks[:3] == [100, 200, 400]
    assert max(blocks) == MAX_BLOCK_S


def test_good_behaviour_wipes_the_slate() -> None:
    d = Damper(limit=1, block_s=100)
    assert d.failed("a", now=0) == 100
    assert d.failed("a", now=200) == 200
    assert d.failed("a", now=200 + 200 + MAX_BLOCK_S + 1) == 100


def test_off_when_limit_is_zero() -> None:
    d = Damper(limit=0, block_s=10)
    assert all(d.failed("a", now=0) == 0 for _ in range(100))
    assert d.tracked() == 0


def test_memory_is_bounded() -> None:
    d = Damper(limit=5, block_s=10, capacity=100)
    for i in range(1000):
        d.failed(f"10.0.{i // 256}.{i % 256}", now=0)
    assert d.tracked() == 100


def test_ipv6_counts_per_64() -> None:
    a = bucket(ipaddress.ip_address("2001:db8:1:2::1"))
    b = bucket(ipaddress.ip_address("2001:db8:1:2:ffff::9"))
    c = bucket(ipaddress.ip_address("2001:db8:1:3::1"))
    assert a == b != c
    assert bucket(ipaddress.ip_address("192.0.2.1")) == "192.0.2.1"
    assert bucket(None) == "unknown"


def test_exempt_addresses_are_not_counted() -> None:
    from lmgate.guard.allowlist import NetworkSet

    d = Damper(limit=1, block_s=10, exempt=NetworkSet(["127.0.0.1/32", "::1/128"]))
    assert not d.counts(ipaddress.ip_address("127.0.0.1"))
    assert not d.counts(ipaddress.ip_address("::1"))
    assert d.counts(ipaddress.ip_address("127.0.0.2"))
    assert not Damper(limit=0, block_s=10).counts(ipaddress.ip_address("10.0.0.1"))


def test_blocks_are_listed_and_lifted() -> None:
    from lmgate.guard.damping import bucket_of_text

    d = Damper(limit=1, block_s=10)
    d.failed("10.0.0.1", now=0)
    d.failed("10.0.0.2", now=5)
    d.failed("10.0.0.3", now=-100)  # long over
    assert [b["address"] for b in d.blocks(now=6)] == ["10.0.0.2", "10.0.0.1"]
    assert d.clear("10.0.0.9", now=6) == []
    assert d.clear("10.0.0.1", now=6) == ["10.0.0.1"]
    assert d.blocked_for("10.0.0.1", now=6) == 0
    assert d.clear(now=6) == ["10.0.0.2"] and d.tracked() == 0
    assert bucket_of_text("2001:db8::5") == "2001:db8::/64"
    assert bucket_of_text("2001:db8::/64") == "2001:db8::/64"
    assert bucket_of_text("10.0.0.1") == "10.0.0.1"
    assert bucket_of_text("nonsense") is None and bucket_of_text("1.2.3.4/99") is None
