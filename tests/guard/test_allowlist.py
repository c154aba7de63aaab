"""CIDR matching and client-address resolution behind trusted proxies."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmgate.guard.allowlist import NetworkSet, client_address, parse_address


def test_v4_v6_and_single_addresses() -> None:
    nets = NetworkSet(["10.0.0.0/8", "fd00::/8", "192.168.1.7"])
    assert ipaddress.ip_address("10.1.2.3") in nets
    assert ipaddress.ip_address("fd12::1") in nets
    assert ipaddress.ip_address("192.168.1.7") in nets
    assert ipaddress.ip_address("192.168.1.8") not in nets
    assert ipaddress.ip_address("fe80::1") not in nets


def test_ipv4_mapped_ipv6_is_its_ipv4_address() -> None:
    assert parse_address("::ffff:10.0.0.1") == ipaddress.ip_address("10.0.0.1")
    assert parse_address("[::1]:8080") == ipaddress.ip_address("::1")
    assert parse_address("10.0.0.1:443") == ipaddress.ip_address("10.0.0.1")
    assert parse_address("unknown") is None


def _hdr(name: str, value: str) -> tuple[bytes, bytes]:
    return (name.encode(), value.encode())


def test_forwarded_headers_ignored_from_untrusted_peer() -> None:
    headers = [_hdr("x-forwarded-for", "10.9.9.9")]
    addr = client_address("203.0.113.5", headers, NetworkSet([]))
    assert addr == ipaddress.ip_address("203.0.113.5")


def test_rightmost_untrusted_hop_wins() -> None:
    trusted = NetworkSet(["127.0.0.1/32", "10.0.0.0/24"])
    headers = [_hdr("x-forwarded-for", "6.6.6.6, 192.0.2.44, 10.0.0.2")]
    assert client_address("127.0.0.1", headers, trusted) == ipaddress.ip_address("192.0.2.44")


def test_rfc7239_forwarded() -> None:
    trusted = NetworkSet(["127.0.0.1"])
    headers = [_hdr("forwarded", 'for=198.51.100.17;proto=https, for="[2001:db8::1]:4711"')]
    assert client_address("127.0.0.1", headers, trusted) == ipaddress.ip_address("2001:db8::1")


def test_all_hops_trusted_gives_leftmost() -> None:
    trusted = NetworkSet(["10.0.0.0/8", "127.0.0.1"])
    headers = [_hdr("x-forwarded-for", "10.0.0.9, 10.0.0.8")]
    assert client_address("127.0.0.1", headers, trusted) == ipaddress.ip_address("10.0.0.9")


@given(
    net=st.ip_addresses(v=4).map(lambda a: ipaddress.ip_network(f"{a}/{16}", strict=False)),
    addr=st.ip_addresses(v=4),
)
def test_v4_matching_agrees_with_ipaddress(net: ipaddress.IPv4Network, addr: object) -> None:
    assert (addr in NetworkSet([str(net)])) == (addr in net)


@given(addr=st.ip_addresses(v=6), prefix=st.integers(min_value=0, max_value=128))
def test_v6_matching_agrees_with_ipaddress(addr: ipaddress.IPv6Address, prefix: int) -> None:
    net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    assert addr in NetworkSet([str(net)])


def test_bad_cidr_is_an_error() -> None:
    with pytest.raises(ValueError):
        NetworkSet(["10.0.0.0/33"])
