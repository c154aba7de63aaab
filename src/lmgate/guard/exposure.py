"""Exposure self-check: is this gateway, or the LM Studio behind it, open to more than intended?

Exposed local LLM servers are found by internet scans every day. At start and in
`lmgate doctor`, lmgate warns when it listens on a public address, when auth is off on a network
listener, when keys would cross the network in clear text, and when the upstream itself answers
without a token where others can reach it (then lmgate's keys can simply be walked around).
The upstream check looks at this machine's listening sockets and sends one GET to the upstream's
configured address, nothing else.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import psutil

from lmgate.guard.allowlist import IPAddress, parse_address
from lmgate.settings import Settings, is_loopback_host
from lmgate.upstream.client import UpstreamClient

Level = Literal["ok", "warn", "fail"]
_WILDCARDS = ("", "0.0.0.0", "::", "[::]")


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    topic: str
    message: str


def host_addresses() -> list[IPAddress]:
    """Every address of this machine's interfaces (IPv4 and IPv6)."""
    found: list[IPAddress] = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            addr = parse_address(entry.address.split("%", 1)[0])
            if addr is not None and addr not in found:
                found.append(addr)
    return found


def lan_addresses() -> list[IPAddress]:
    """The addresses others can reach this machine at: neither loopback nor link-local."""
    return [a for a in host_addresses() if not a.is_loopback and not a.is_link_local]


def listener_findings(
    settings: Settings, *, keys_required: bool, addresses: Iterable[IPAddress]
) -> list[Finding]:
    """What the listen address, auth and TLS settings expose; `addresses`: this host's."""
    host = settings.host.strip()
    if is_loopback_host(host):
        return [Finding("ok", "listener", f"listens on loopback only ({host})")]
    wildcard = host in _WILDCARDS
    reachable = list(addresses) if wildcard else [a for a in [parse_address(host)] if a]
    findings: list[Finding] = []
    public = [str(a) for a in reachable if a.is_global]
    if public:
        findings.append(
            Finding(
                "warn",
                "public-listener",
                f"lmgate listens on {host}, which includes the public address(es) "
                f"{', '.join(public)}: anyone on the internet may reach port {settings.port}. "
                "Listen on a LAN address (--host) or firewall the port.",
            )
        )
    if not keys_required:
        findings.append(
            Finding(
                "warn",
                "no-auth",
                f"auth is off on a network listener ({host}): anyone who reaches port "
                f"{settings.port} can use the models. Create a key (lmgate keys create) or set "
                "LMGATE_ADMIN_KEY / LMGATE_API_KEYS.",
            )
        )
    if settings.tls_cert is None:
        findings.append(
            Finding(
                "warn",
                "no-tls",
                "TLS is off while keys and prompts cross the network in clear text; serve with "
                "--tls-cert/--tls-key (lmgate tls selfsigned makes a LAN certificate).",
            )
        )
    if not findings:
        findings.append(Finding("ok", "listener", f"listens on {host} with keys and TLS"))
    return findings


def wide_listeners(port: int) -> list[str]:
    """Local addresses listening on `port` that others can reach (wildcard or non-loopback)."""
    try:
        sockets = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return []
    wide: list[str] = []
    for sock in sockets:
        if sock.status != psutil.CONN_LISTEN or not sock.laddr or sock.laddr.port != port:
            continue
        ip = ipaddress.ip_address(sock.laddr.ip.split("%", 1)[0])
        if not ip.is_loopback:
            wide.append(f"{sock.laddr.ip}:{port}")
    return wide


async def upstream_findings(settings: Settings, *, limit_s: float = 2.0) -> list[Finding]:
    """Can others reach the upstream, and if so does it answer them without a token?

    The probe goes out only when the upstream is reachable from the network at all, so a
    loopback-only LM Studio is not even asked."""
    url = settings.upstream_shown
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    if not is_loopback_host(host):
        where = f"{url} is on the network"
    elif wide := wide_listeners(port):
        where = f"the upstream's port also listens on {', '.join(wide)}"
    else:
        return [Finding("ok", "upstream-exposure", f"upstream {url} listens on loopback only")]
    anonymous = UpstreamClient(settings.model_copy(update={"upstream_token": None}))
    await anonymous.start()
    try:
        probe = await anonymous.probe("/v1/models", limit_s=limit_s)
    finally:
        await anonymous.close()
    if probe.status == 0:
        return [Finding("ok", "upstream-exposure", f"{where}; it did not answer just now")]
    if probe.status in (401, 403):
        return [Finding("ok", "upstream-exposure", f"{where} and requires a token")]
    return [
        Finding(
            "warn",
            "upstream-bypass",
            f"{where} and answers without a token: anyone who reaches it can skip lmgate's keys "
            "and limits. In LM Studio turn off 'Serve on Local Network' or require an API token "
            "(then set LMGATE_UPSTREAM_TOKEN).",
        )
    ]


def startup_warnings(settings: Settings, *, keys_required: bool) -> list[str]:
    """The warnings `lmgate serve` prints before it starts listening."""
    findings = listener_findings(settings, keys_required=keys_required, addresses=lan_addresses())
    findings += asyncio.run(upstream_findings(settings, limit_s=1.0))
    return [f.message for f in findings if f.level != "ok"]
