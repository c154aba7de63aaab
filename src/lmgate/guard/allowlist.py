"""Who is the client, and may it come in: CIDR allowlists and trusted-proxy handling.

The socket's peer address is the truth. `X-Forwarded-For` / `Forwarded` are read only when
that peer is a configured trusted proxy, and then the rightmost hop that is not itself a
trusted proxy is the client (everything left of it could be forged).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> IPAddress | None:
    """An address from a header or socket; IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes IPv4."""
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


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


def forwarded_chain(headers: Sequence[tuple[bytes, bytes]]) -> list[str]:
    """Every hop named by `Forwarded: for=` and `X-Forwarded-For`, left to right."""
    hops: list[str] = []
    for name, value in headers:
        if name == b"forwarded":
            for element in value.decode("latin-1").split(","):
                for pair in element.split(";"):
                    key, _, val = pair.strip().partition("=")
                    if key.lower() == "for" and val:
                        hops.append(val)
        elif name == b"x-forwarded-for":
            hops.extend(h for h in value.decode("latin-1").split(",") if h.strip())
    return hops


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
    peer: str | None, headers: Sequence[tuple[bytes, bytes]], trusted: NetworkSet
) -> IPAddress | None:
    """The client's address, honouring forwarding headers only from trusted proxies."""
    addr = _peer(peer) if peer else None
    if addr is None or not trusted or addr not in trusted:
        return addr
    for hop in reversed(forwarded_chain(headers)):
        hop_addr = parse_address(hop)
        if hop_addr is None:
            return addr  # an unparseable hop: stop at the last address we can trust
        addr = hop_addr
        if hop_addr not in trusted:
            return hop_addr
    return addr
