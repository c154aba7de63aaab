"""Property-based checks of path normalisation and address matching: whatever the spelling, an
admin path classifies as admin (`/metrics` as metrics, and nothing else does), and an address
matches a network exactly when it is inside it."""

from __future__ import annotations

import ipaddress
import string
from urllib.parse import quote

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lmgate.errors import BadRequest
from lmgate.guard.allowlist import NetworkSet, client_address, parse_address
from lmgate.guard.paths import Scope, normalise, quote_path, required_scope

PROTECTED = [
    "/admin/keys",
    "/admin/state",
    "/debug/status",
    "/metrics",
    "/api/v1/models/load",
    "/api/v1/models/unload",
    "/api/v1/models/download",
]
segment = st.text(alphabet=string.ascii_letters + string.digits + "-_.~", min_size=1, max_size=8)


def _classify(path: str) -> Scope | None:
    try:
        return required_scope(normalise(path).lower(), health_public=True)
    except BadRequest:
        return None  # refused outright: never reaches a route


@st.composite
def disguised(draw: st.DrawFn) -> str:
    """A protected path in disguise: decoys and `..`, doubled slashes, encodings, case."""
    target = draw(st.sampled_from(PROTECTED))
    parts = []
    for piece in target.strip("/").split("/"):
        for _ in range(draw(st.integers(0, 2))):
            parts += [draw(segment.filter(lambda s: s not in (".", ".."))), ".."]
        if draw(st.booleans()):
            parts.append(".")
        parts.append(piece)
    text = "/" + "/".join(parts)
    text = text.replace("/", draw(st.sampled_from(["/", "//", "\\", "/./"])))
    chars = []
    for ch in text:
        mode = draw(st.integers(0, 5))
        if mode == 1:
            chars.append(ch.upper() if ch.isalpha() else ch)
        elif mode == 2:
            chars.append(quote(ch, safe=""))
        elif mode == 3:
            chars.append("%" + format(ord(ch), "02x"))
        elif mode == 4:
            chars.append("%25" + format(ord(ch), "02X"))
        else:
            chars.append(ch)
    return "".join(chars)


@settings(max_examples=500)
@given(disguised())
def test_disguised_admin_paths_stay_admin(path: str) -> None:
    found = _classify(path)
    if found is Scope.METRICS:  # the one route a metrics key reaches, and only that spelling
        assert normalise(path).lower() == "/metrics", path
    else:
        assert found in (Scope.ADMIN, None), path


@given(st.text(min_size=1, max_size=60).map(lambda s: "/" + s))
def test_normalised_paths_are_canonical(path: str) -> None:
    try:
        once = normalise(path)
    except BadRequest:
        return
    assert once.startswith("/") and "//" not in once and "\\" not in once
    assert ".." not in once.split("/") and "." not in once.split("/")
    assert normalise(once) == once
    assert normalise(quote_path(once)) == once  # what goes upstream means the same


@given(st.text(min_size=0, max_size=40))
def test_control_characters_never_pass(text: str) -> None:
    assume(any(ord(c) < 0x20 or ord(c) == 0x7F for c in text))
    try:
        normalise("/v1/" + text)
    except BadRequest:
        return
    raise AssertionError("a control character passed")


@given(st.ip_addresses(), st.ip_addresses(), st.integers(0, 128))
def test_membership_agrees_with_ipaddress(addr: object, base: object, prefix: int) -> None:
    assert isinstance(base, ipaddress.IPv4Address | ipaddress.IPv6Address)
    net = ipaddress.ip_network(f"{base}/{min(prefix, base.max_prefixlen)}", strict=False)
    assert (addr in NetworkSet([str(net)])) == (addr in net)


@given(st.ip_addresses(v=4), st.integers(0, 32))
def test_ipv4_mapped_ipv6_matches_its_ipv4_network(
    addr: ipaddress.IPv4Address, prefix: int
) -> None:
    net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    mapped = parse_address(f"::ffff:{addr}")
    assert mapped == addr and mapped in NetworkSet([str(net)])


@given(st.lists(st.ip_addresses(v=4), min_size=1, max_size=6), st.ip_addresses(v=4))
def test_forwarding_is_ignored_from_untrusted_peers(
    hops: list[object], peer: ipaddress.IPv4Address
) -> None:
    assume(not peer.is_loopback)
    header = ", ".join(map(str, hops)).encode()
    found = client_address(str(peer), [(b"x-forwarded-for", header)], NetworkSet(["127.0.0.0/8"]))
    assert found == peer


@given(st.lists(st.ip_addresses(v=4), min_size=1, max_size=6))
def test_rightmost_untrusted_hop_wins(hops: list[ipaddress.IPv4Address]) -> None:
    trusted = NetworkSet(["10.0.0.0/8"])
    header = ", ".join(map(str, hops)).encode()
    found = client_address("10.1.1.1", [(b"x-forwarded-for", header)], trusted)
    untrusted = [h for h in hops if h not in trusted]
    assert found == (untrusted[-1] if untrusted else hops[0])
