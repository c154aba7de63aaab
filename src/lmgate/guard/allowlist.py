"""Who is the client, and may it come in: CIDR allowlists and trusted-proxy handling.

The socket's peer address is the truth. One forwarding header, `X-Forwarded-For` or
`Forwarded` as configured, is read only when that peer is a configured trusted proxy, and then
the rightmost hop that is not itself a trusted proxy is the client (everything left of it could
be forged). The other header is ignored: a proxy that sets one passes the client's copy of the
other through untouched, so mixing them would let the client write its own rightmost hop.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from lmgate.errors import BadRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

X_FORWARDED_FOR = b"x-forwarded-for"
FORWARDED = b"forwarded"
# Hops walked through trusted proxies before a chain is refused; real chains have a few.
MAX_HOPS = 32
_LONGEST_HOP = 64  # `[v6]:port` takes at most 53 characters; a zone id may have the rest


def ip_or_none(text: str) -> IPAddress | None:
    """An address in plain form, or None; IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes IPv4."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_address(text: str) -> IPAddress | None:
    """An address from a header or socket; IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes IPv4."""
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    return ip_or_none(text)


class NetworkSet:
    """A set of CIDRs matched by address family; empty means 'matches nothing'."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        nets = [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()]
        self.v4: tuple[IPNetwork, ...] = tuple(n for n in nets if n.version == 4)
        self.v6: tuple[IPNetwork, ...] = tuple(n for n in nets if n.version == 6)

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def __contains__(self, addr: object) -> bool:
        if isinstance(addr, ipaddress.IPv4Address):
            return any(addr in net for net in self.v4)
        if isinstance(addr, ipaddress.IPv6Address):
            return any(addr in net for net in self.v6)
        return False


_PEERS: dict[str, IPAddress | None] = {}  # socket peers seen lately, parsed once each


def _peer(text: str) -> IPAddress | None:
    """`parse_address` for socket peers, which repeat: a LAN has few clients, each of them
    asking many times. Bounded: forgotten wholesale when it grows past 4096 addresses."""
    try:
        return _PEERS[text]
    except KeyError:
        if len(_PEERS) >= 4096:
            _PEERS.clear()
        addr = _PEERS[text] = parse_address(text)
        return addr


def client_address(
    peer: str | None,
    headers: Sequence[tuple[bytes, bytes]],
    trusted: NetworkSet,
    header: bytes = X_FORWARDED_FOR,
) -> IPAddress | None:
    """The client's address: the socket's peer, or when that peer is a trusted proxy, the
    rightmost hop of `header` (`x-forwarded-for` or `forwarded`) that is not a trusted proxy.

    The other forwarding header is never read: a proxy sets one and passes the client's own
    copy of the other through. Several lines of `header` are one list, in order. A hop on the
    walk that names no address (`unknown`, `_hidden`, garbage, nothing) or a walk longer than
    `MAX_HOPS` is refused (400): the client cannot be known, and the proxy's own address is
    not the client's. With every hop trusted, the leftmost is the client.
    """
    addr = _peer(peer) if peer else None
    if addr is None or not trusted or addr not in trusted:
        return addr
    lines = [value for name, value in headers if name == header]
    if not lines:
        return addr  # the proxy's own request (a health check), or a proxy that adds none
    read = _forwarded_for if header == FORWARDED else _address
    budget = MAX_HOPS
    for line in reversed(lines):
        hops = line.rsplit(b",", budget)  # the rest, left of the budget, stays in one piece
        for hop in reversed(hops):
            if budget == 0:
                raise _refusal(header, f"more than {MAX_HOPS} hops to walk")
            budget -= 1
            found = read(hop.decode("latin-1"))
            if found is None:
                raise _refusal(header, "a hop that is not an address")
            if found not in trusted:
                return found
            addr = found
    return addr


def _refusal(header: bytes, what: str) -> BadRequest:
    name = "Forwarded" if header == FORWARDED else "X-Forwarded-For"
    return BadRequest(
        f"the {name} header from a trusted proxy has {what}; the client cannot be known",
        code="invalid_forwarded_header",
    )


def _address(text: str) -> IPAddress | None:
    """One hop: `a.b.c.d`, `a.b.c.d:port`, a bare IPv6 address or `[v6]`, `[v6]:port`.
    Anything else (a name, `unknown`, an obfuscated `_id`, an empty hop) is None."""
    text = text.strip(" \t")
    if len(text) > _LONGEST_HOP:
        return None
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket or (port and not _is_port(port)) or ":" not in host:
            return None
        text = host
    elif text.count(":") == 1:
        text, _, port = text.partition(":")
        if not _is_port(":" + port) or "." not in text:
            return None
    return ip_or_none(text)


def _is_port(text: str) -> bool:
    """`:` and one to five ASCII digits."""
    return 2 <= len(text) <= 6 and text[0] == ":" and text[1:].isascii() and text[1:].isdigit()


def _forwarded_for(element: str) -> IPAddress | None:
    """The address in one RFC 7239 element's `for=` parameter (`for=192.0.2.1;proto=https`,
    `for="[2001:db8::1]:4711"`); None when it has none, two, or one that is not an address."""
    value: str | None = None
    for pair in element.split(";"):
        if not pair.strip(" \t"):
            continue  # empty pairs are allowed
        name, equals, given = pair.partition("=")
        if not equals:
            return None
        if name.strip(" \t").lower() == "for":
            if value is not None:
                return None
            value = given.strip(" \t")
    if value is None:
        return None
    if value.startswith('"'):
        if len(value) < 2 or not value.endswith('"') or "\\" in value:
            return None
        value = value[1:-1]
    return _address(value)
