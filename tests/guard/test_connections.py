"""The connection gate in process: counts per address, exemptions, refusals, and the
settings that shape it."""

from __future__ import annotations

import random

import pytest

from lmgate.errors import Forbidden, TooManyRequests
from lmgate.guard.allowlist import NetworkSet
from lmgate.guard.connections import DEFAULT_PER_CLIENT, ConnectionGate, connection_gate
from lmgate.settings import Settings


def _gate(per_client: int = 3, *, cap_loopback: bool = True, reachable: str = "") -> ConnectionGate:
    return ConnectionGate(
        per_client=per_client,
        cap_loopback=cap_loopback,
        trusted_proxies=NetworkSet(["10.9.9.9"]),
        reachable=NetworkSet(reachable.split(",")) if reachable else None,
    )


def test_the_cap_counts_each_address_and_frees_on_leave() -> None:
    gate = _gate()
    keys = [gate.enter("10.0.0.1") for _ in range(3)]
    with pytest.raises(TooManyRequests) as full:
        gate.enter("10.0.0.1")
    assert full.value.code == "too_many_connections" and full.value.headers["Retry-After"] == "1"
    assert gate.enter("10.0.0.2") == "10.0.0.2"  # another address is not affected
    assert keys[0] is not None
    gate.leave(keys[0])
    assert gate.enter("10.0.0.1") == "10.0.0.1"


def test_counts_stay_exact_and_entries_go_at_zero() -> None:
    gate = _gate(per_client=50)
    rng = random.Random(7)
    open_: list[str] = []
    for _ in range(20_000):
        if open_ and rng.random() < 0.5:
            gate.leave(open_.pop(rng.randrange(len(open_))))
        else:
            host = f"10.0.{rng.randrange(4)}.{rng.randrange(4)}"
            try:
                key = gate.enter(host)
            except TooManyRequests:
                continue
            assert key is not None
            open_.append(key)
        assert gate.held() == len(open_)
    for key in open_:
        gate.leave(key)
    assert gate.open == {}


def test_ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() -> None:
    gate = _gate(per_client=2)
    gate.enter("2001:db8::1")
    gate.enter("2001:db8::ffff:2")
    with pytest.raises(TooManyRequests):
        gate.enter("2001:db8::3")  # same /64, another address
    assert gate.enter("2001:db8:0:1::1") is not None
    gate.enter("::ffff:10.1.1.1")
    gate.enter("10.1.1.1")
    with pytest.raises(TooManyRequests):
        gate.enter("10.1.1.1")


def test_trusted_proxies_and_default_loopback_are_not_counted() -> None:
    gate = _gate(per_client=1, cap_loopback=False)
    assert [gate.enter("10.9.9.9") for _ in range(5)] == [None] * 5
    assert [gate.enter("127.0.0.1") for _ in range(5)] == [None] * 5
    assert [gate.enter("::1") for _ in range(5)] == [None] * 5
    capped = _gate(per_client=1, cap_loopback=True)
    capped.enter("127.0.0.1")
    with pytest.raises(TooManyRequests):
        capped.enter("127.0.0.1")


def test_zero_means_no_cap() -> None:
    gate = _gate(per_client=0)
    assert [gate.enter("10.0.0.1") for _ in range(500)] == [None] * 500


def test_a_peer_no_allowlist_admits_is_refused() -> None:
    gate = _gate(reachable="10.0.0.0/24,10.9.9.9")
    with pytest.raises(Forbidden) as refused:
        gate.enter("10.0.1.1")
    assert refused.value.code == "address_not_allowed"
    assert gate.open == {}
    assert gate.enter("10.0.0.7") is not None
    assert gate.enter("10.9.9.9") is None


@pytest.mark.parametrize(
    ("env", "peer", "refused"),
    [
        ({}, "203.0.113.5", False),  # --allow empty: everyone
        ({"allow": ["10.0.0.0/8"]}, "203.0.113.5", True),
        ({"allow": ["10.0.0.0/8"]}, "127.0.0.1", False),  # the admin allowlist (loopback)
        ({"allow": ["10.0.0.0/8"], "admin_allow": ["10.1.0.0/16"]}, "127.0.0.1", True),
        ({"allow": ["10.0.0.0/8"], "metrics_allow": ["192.0.2.0/24"]}, "192.0.2.9", False),
        ({"allow": ["10.0.0.0/8"], "trusted_proxies": ["198.51.100.1"]}, "198.51.100.1", False),
        ({"allow": ["0.0.0.0/0"]}, "203.0.113.5", False),
    ],
)
def test_reachability_from_the_settings(
    env: dict[str, list[str]], peer: str, refused: bool
) -> None:
    gate = connection_gate(Settings(**env))  # type: ignore[arg-type]
    if refused:
        with pytest.raises(Forbidden):
            gate.enter(peer)
    else:
        gate.enter(peer)


def test_cap_from_the_settings() -> None:
    default = connection_gate(Settings())
    assert default.per_client == DEFAULT_PER_CLIENT and not default.cap_loopback
    explicit = connection_gate(Settings(max_connections_per_client=5))
    assert explicit.per_client == 5 and explicit.cap_loopback
    assert connection_gate(Settings(max_connections_per_client=0)).per_client == 0


def test_body_memory_setting() -> None:
    assert Settings().body_memory_limit == 8 * Settings().max_body_bytes
    assert Settings(max_body_bytes=1000, max_body_memory_bytes=5000).body_memory_limit == 5000
    assert Settings(max_body_bytes=1000, max_body_memory_bytes=999).body_memory_limit == 999
