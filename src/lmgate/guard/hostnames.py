"""The names a gateway without keys answers to, so a page cannot reach it under its own.

DNS rebinding: a page on attacker.example points that name at 127.0.0.1 and then calls the
gateway as a same-origin page would, with `Host: attacker.example`. So without keys a `Host`
must be a loopback name (`localhost`, `*.localhost`, 127.0.0.0/8, `[::1]`), the listen address
(all of this machine's addresses and its host name when listening on all of them), a name in
`LMGATE_ALLOWED_HOSTS` (`*.domain` for its subdomains, `*` for any), or a single-label name
(`gpu-box`, from /etc/hosts or the LAN's own DNS: no one on the internet can give it an
address). IP addresses of other machines and every other dotted name are refused.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

from lmgate.guard.allowlist import ip_or_none

_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
# `name[:port]` or `[v6][:port]`: what a browser puts in `Host`; no userinfo, no path.
_AUTHORITY = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9_.-]+))(?::\d{1,5})?")


def host_name(authority: str) -> str:
    """The name in a `Host` value (or a configured name): lower-case, without port or trailing
    dot, IP addresses in their canonical form; "" for anything that is not a host at all."""
    text = authority.strip().lower()
    match = _AUTHORITY.fullmatch(text)
    if match is not None:
        text = match["v6"] or match["name"].rstrip(".")
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text if match is not None else ""


def is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    addr = ip_or_none(name)
    return addr is not None and addr.is_loopback


def _machine_names() -> set[str]:
    """This machine's host name and interface addresses: how a LAN reaches a wildcard listener."""
    names = {host_name(socket.gethostname())}
    names.add(f"{next(iter(names))}.local")
    try:
        interfaces = psutil.net_if_addrs().values()
    except OSError:  # pragma: no cover - no interface list on this platform
        interfaces = []  # type: ignore[assignment]
    for entries in interfaces:
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                names.add(host_name(entry.address.split("%", 1)[0]))
    return names


@dataclass(frozen=True, slots=True)
class HostNames:
    """The names a keyless gateway answers to, besides the loopback ones."""

    exact: frozenset[str]
    suffixes: tuple[str, ...] = ()  # from `*.example.lan`: ".example.lan"
    anything: bool = False

    @classmethod
    def build(cls, listen_host: str, allowed: Iterable[str]) -> HostNames:
        names: set[str] = set()
        suffixes: list[str] = []
        anything = False
        for item in allowed:
            entry = item.strip().lower()
            if entry == "*":
                anything = True
            elif entry.startswith("*."):
                suffixes.append(entry[1:].rstrip("."))
            elif entry:
                names.add(host_name(entry))
        listen = listen_host.strip().lower()
        if listen in _WILDCARD_HOSTS:
            names |= _machine_names()
        else:
            names.add(host_name(listen))
        return cls(frozenset(names), tuple(suffixes), anything)

    def allows(self, name: str) -> bool:
        if self.anything or name in self.exact or is_loopback_name(name):
            return True
        if name and "." not in name and ":" not in name:
            return True  # a single-label name (`gpu-box`): public DNS cannot answer for it
        return any(name.endswith(suffix) for suffix in self.suffixes)
