"""CIDR matching and client-address resolution behind trusted proxies."""

from __future__ import annotations

import ipaddress
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmgate.errors import BadRequest
from lmgate.guard.allowlist import (
    FORWARDED,
    MAX_HOPS,
    X_FORWARDED_FOR,
    NetworkSet,
    client_address,
    parse_address,
)


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
    found = client_address("127.0.0.1", headers, trusted, FORWARDED)
    assert found == ipaddress.ip_address("2001:db8::1")


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


# --- one trusted header, and a chain that cannot be read is refused ---------------------------

PROXY = "127.0.0.1"
TRUSTED = NetworkSet(["127.0.0.1/32", "10.0.0.0/24"])


def _ip(text: str) -> object:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("trusted_header", "headers", "client"),
    [
        # X-Forwarded-For trusted: the client's own Forwarded is not read, in any order
        (X_FORWARDED_FOR, [("forwarded", "for=127.0.0.1"), ("x-forwarded-for", "192.0.2.9")],
         "192.0.2.9"),
        (X_FORWARDED_FOR, [("x-forwarded-for", "192.0.2.9"), ("forwarded", "for=unknown")],
         "192.0.2.9"),
        (X_FORWARDED_FOR, [("forwarded", "for=10.0.0.5"), ("x-forwarded-for", "192.0.2.9")],
         "192.0.2.9"),
        (X_FORWARDED_FOR, [("forwarded", 'for="_hidden", for=garbage')], PROXY),
        # Forwarded trusted: the client's own X-Forwarded-For is not read
        (FORWARDED, [("x-forwarded-for", "127.0.0.1"), ("forwarded", "for=192.0.2.9")],
         "192.0.2.9"),
        (FORWARDED, [("forwarded", "for=192.0.2.9"), ("x-forwarded-for", "unknown")],
         "192.0.2.9"),
        (FORWARDED, [("x-forwarded-for", "garbage, 10.0.0.5")], PROXY),
    ],
)  # fmt: skip
def test_only_the_configured_header_is_read(
    trusted_header: bytes, headers: list[tuple[str, str]], client: str
) -> None:
    raw = [_hdr(k, v) for k, v in headers]
    assert client_address(PROXY, raw, TRUSTED, trusted_header) == _ip(client)


@pytest.mark.parametrize(
    "value",
    [
        "unknown",
        "192.0.2.9, unknown",
        "_hidden",
        "garbage",
        "",
        " ",
        "192.0.2.9,",
        "192.0.2.9, , 10.0.0.7",  # an empty hop, reached through a trusted one
        "192.0.2.9, bogus, 10.0.0.7",
        "10.0.0.7:port",
        "10.0.0.7:123456",
        "[10.0.0.7]",
        "[::1",
        "::1:80:x",
        "2001:db8::1]:80",
        "010.000.000.007",
        "10.0.0.7/24",
        "localhost",
        '"10.0.0.7"',
        "1" * 5000,
    ],
)
def test_unreadable_x_forwarded_for_hops_are_refused(value: str) -> None:
    with pytest.raises(BadRequest) as refused:
        client_address(PROXY, [_hdr("x-forwarded-for", value)], TRUSTED)
    assert refused.value.code == "invalid_forwarded_header"
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "value",
    [
        "for=unknown",
        "for=_hidden",
        'for="_gazonk"',
        "for=192.0.2.9, for=unknown",
        "for=192.0.2.9, proto=https",  # an element without for=
        "for=192.0.2.9;for=10.0.0.7",  # two in one element
        "for",
        "for=",
        'for="10.0.0.7',
        'for="[::1]:80\\"',
        "for=[::1]:80x",
        "for=192.0.2.9, ",
        "for=192.0.2.9,,",
        "by=10.0.0.1",
    ],
)
def test_unreadable_forwarded_hops_are_refused(value: str) -> None:
    with pytest.raises(BadRequest):
        client_address(PROXY, [_hdr("forwarded", value)], TRUSTED, FORWARDED)


@pytest.mark.parametrize(
    ("value", "client"),
    [
        ("for=192.0.2.9", "192.0.2.9"),
        ("For=192.0.2.9", "192.0.2.9"),
        ('for="192.0.2.9:4711"', "192.0.2.9"),
        ('for="[2001:db8::1]"', "2001:db8::1"),
        ('for="[2001:db8::1]:4711";proto=https;by=10.0.0.1', "2001:db8::1"),
        ('proto=https;for="[::ffff:192.0.2.9]"', "192.0.2.9"),
        ("for=192.0.2.9;;proto=http", "192.0.2.9"),
        ("for=unknown, for=192.0.2.9", "192.0.2.9"),  # the unknown hop is left of the client
        ("for=192.0.2.9, for=10.0.0.7", "192.0.2.9"),
        ("for=10.0.0.8, for=10.0.0.7", "10.0.0.8"),
    ],
)
def test_forwarded_spellings(value: str, client: str) -> None:
    found = client_address(PROXY, [_hdr("forwarded", value)], TRUSTED, FORWARDED)
    assert found == _ip(client)


@pytest.mark.parametrize(
    ("value", "client"),
    [
        ("192.0.2.9", "192.0.2.9"),
        (" 192.0.2.9 ", "192.0.2.9"),
        ("\t192.0.2.9,\t10.0.0.7", "192.0.2.9"),
        ("192.0.2.9:4711", "192.0.2.9"),
        ("[2001:db8::1]:4711", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("[::1]:80", "::1"),
        ("::ffff:192.0.2.9", "192.0.2.9"),
        ("garbage, 192.0.2.9", "192.0.2.9"),  # never walked: left of the client
        ("unknown, 192.0.2.9, 10.0.0.7, 127.0.0.1", "192.0.2.9"),
    ],
)
def test_x_forwarded_for_spellings(value: str, client: str) -> None:
    assert client_address(PROXY, [_hdr("x-forwarded-for", value)], TRUSTED) == _ip(client)


def test_several_header_lines_are_one_list_in_order() -> None:
    lines = [_hdr("x-forwarded-for", "192.0.2.1, 192.0.2.2"), _hdr("x-forwarded-for", "10.0.0.7")]
    assert client_address(PROXY, lines, TRUSTED) == _ip("192.0.2.2")
    lines = [_hdr("x-forwarded-for", "192.0.2.1"), _hdr("x-forwarded-for", "10.0.0.7, 10.0.0.8")]
    assert client_address(PROXY, lines, TRUSTED) == _ip("192.0.2.1")
    lines = [_hdr("x-forwarded-for", "192.0.2.1"), _hdr("x-forwarded-for", "")]
    with pytest.raises(BadRequest):
        client_address(PROXY, lines, TRUSTED)
    lines = [_hdr("forwarded", "for=192.0.2.1"), _hdr("forwarded", "for=10.0.0.7")]
    assert client_address(PROXY, lines, TRUSTED, FORWARDED) == _ip("192.0.2.1")


def test_the_proxy_address_is_never_the_fallback() -> None:
    for value in ("unknown", "for=unknown", "_x", ""):
        with pytest.raises(BadRequest):
            client_address(PROXY, [_hdr("x-forwarded-for", value)], TRUSTED)
        with pytest.raises(BadRequest):
            client_address(PROXY, [_hdr("forwarded", value)], TRUSTED, FORWARDED)


def test_an_untrusted_peer_is_the_client_whatever_its_headers() -> None:
    headers = [_hdr("x-forwarded-for", "unknown"), _hdr("forwarded", "for=_x")]
    assert client_address("192.0.2.50", headers, TRUSTED) == _ip("192.0.2.50")
    assert client_address("192.0.2.50", headers, TRUSTED, FORWARDED) == _ip("192.0.2.50")


def test_long_chains_are_walked_only_so_far() -> None:
    trusted_hops = ", ".join(f"10.0.0.{i % 200 + 1}" for i in range(MAX_HOPS))
    # a chain of exactly MAX_HOPS trusted hops is fine (all trusted: the leftmost) ...
    found = client_address(PROXY, [_hdr("x-forwarded-for", trusted_hops)], TRUSTED)
    assert found == _ip("10.0.0.1")
    # ... one more to walk is refused, whether on the same line or on another
    with pytest.raises(BadRequest):
        client_address(PROXY, [_hdr("x-forwarded-for", "192.0.2.9, " + trusted_hops)], TRUSTED)
    split = [_hdr("x-forwarded-for", "10.0.0.9"), _hdr("x-forwarded-for", trusted_hops)]
    with pytest.raises(BadRequest):
        client_address(PROXY, split, TRUSTED)
    # a client hop found early ends the walk, however long the rest
    assert client_address(PROXY, [_hdr("x-forwarded-for", trusted_hops + ", 192.0.2.9")], TRUSTED)


def test_a_huge_header_costs_little() -> None:
    """64 KiB of hops (the most a head may hold) and thousands of header lines: the walk stops
    at the client or after MAX_HOPS, it never splits or parses the whole header."""
    forged = ("192.0.2.1," * 6500).encode()
    trusted = ("10.0.0.7," * 6500).encode()
    many_lines = [(b"x-forwarded-for", b"10.0.0.7")] * 5000
    started = time.perf_counter()
    for _ in range(200):
        found = client_address(PROXY, [(b"x-forwarded-for", forged + b"192.0.2.9")], TRUSTED)
        assert found == _ip("192.0.2.9")
        with pytest.raises(BadRequest):
            client_address(PROXY, [(b"x-forwarded-for", trusted + b"10.0.0.7")], TRUSTED)
        with pytest.raises(BadRequest):
            client_address(PROXY, many_lines, TRUSTED)
    assert time.perf_counter() - started < 5.0  # ~0.1 s here; generous for a loaded box
