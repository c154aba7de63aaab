"""Who may open a connection, and how many each client address may hold open at once.

Both are decided in `connection_made`, before a byte is parsed, so they cost a dict lookup and
nothing a client sends can make them dearer:

- A peer that no allowlist could ever admit (not in `--allow`, `LMGATE_ADMIN_ALLOW` or
  `LMGATE_METRICS_ALLOW`, and not a trusted proxy) is answered 403 and closed at once: every
  request it could send would be refused anyway. A trusted proxy is let through, since only its
  requests' forwarding headers say who the client is; the guard decides per request.
- Each client address (an IPv6 client: its /64, as for bad-key damping) may hold at most
  `per_client` connections; the next one is answered 429 and closed. Trusted proxies are not
  capped: every client behind one shares its address, so a cap would let one of them lock out
  the rest (the proxy is where those clients are told apart and limited). Loopback is capped
  only when the cap is configured explicitly: the machine itself runs local tools and, often, a
  reverse proxy whose clients all arrive from 127.0.0.1.

Counts live in this process: with `--workers N` each worker keeps its own, so one address may
hold up to N times the cap across the port. Entries are removed when they fall to zero, so
memory follows the connections open now, not every address ever seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from lmgate.errors import Forbidden, GatewayError, TooManyRequests
from lmgate.guard.allowlist import IPAddress, NetworkSet, parse_address
from lmgate.guard.damping import bucket
from lmgate.settings import Settings

DEFAULT_PER_CLIENT = 64
_VERDICTS_KEPT = 4096
log = structlog.get_logger("lmgate.guard")


@dataclass(frozen=True, slots=True)
class _Verdict:
    key: str | None  # the unit counted against the cap; None: not counted
    refusal: GatewayError | None  # refused whatever it sends


class ConnectionGate:
    def __init__(
        self,
        *,
        per_client: int,
        cap_loopback: bool,
        trusted_proxies: NetworkSet,
        reachable: NetworkSet | None,
    ) -> None:
        """`per_client` 0 means no cap; `reachable` None means every address may come in."""
        self.per_client = per_client
        self.cap_loopback = cap_loopback
        self.trusted_proxies = trusted_proxies
        self.reachable = reachable
        self.open: dict[str, int] = {}
        self._verdicts: dict[str, _Verdict] = {}  # socket peers repeat: judged once each

    def enter(self, host: str | None) -> str | None:
        """Count a new connection from `host`; the key to hand to `leave`, or None when it is
        not counted. Raises the `GatewayError` to answer when the connection is refused."""
        verdict = self._verdicts.get(host) if host is not None else None
        if verdict is None:
            verdict = self._judge(host)
        if verdict.refusal is not None:
            self._refused(host, verdict.refusal)
        key = verdict.key
        if key is None:
            return None
        count = self.open.get(key, 0)
        if count >= self.per_client:
            self._refused(host, self._full)
        self.open[key] = count + 1
        return key

    def leave(self, key: str) -> None:
        count = self.open[key] - 1
        if count:
            self.open[key] = count
        else:
            del self.open[key]

    def held(self) -> int:
        """Connections counted now, over every address."""
        return sum(self.open.values())

    @property
    def _full(self) -> GatewayError:
        return TooManyRequests(
            f"too many open connections from this address (at most {self.per_client}); "
            "close some or try again later",
            retry_after=1,
            code="too_many_connections",
        )

    def _judge(self, host: str | None) -> _Verdict:
        addr = parse_address(host) if host is not None else None
        verdict = _Verdict(self._key(addr), self._refusal(addr))
        if host is not None:
            if len(self._verdicts) >= _VERDICTS_KEPT:
                self._verdicts.clear()
            self._verdicts[host] = verdict
        return verdict

    def _key(self, addr: IPAddress | None) -> str | None:
        if addr is None or not self.per_client or addr in self.trusted_proxies:
            return None
        if addr.is_loopback and not self.cap_loopback:
            return None
        return bucket(addr)

    def _refusal(self, addr: IPAddress | None) -> GatewayError | None:
        if self.reachable is None or addr is None or addr in self.reachable:
            return None
        return Forbidden(f"address {addr} is not allowed", code="address_not_allowed")

    def _refused(self, host: str | None, error: GatewayError) -> None:
        log.warning("connection_refused", client=host, reason=error.code, status=error.status)
        raise error


def connection_gate(settings: Settings) -> ConnectionGate:
    """The gate these settings describe (see the module's docstring for the choices)."""
    per_client = settings.max_connections_per_client
    trusted = NetworkSet(settings.trusted_proxies)
    reachable: NetworkSet | None = None
    if settings.allow:  # empty: everyone may reach the public and inference routes
        cidrs = [*settings.allow, *settings.admin_allow, *settings.trusted_proxies]
        cidrs += settings.metrics_allow or []
        reachable = NetworkSet(cidrs)
    return ConnectionGate(
        per_client=DEFAULT_PER_CLIENT if per_client is None else per_client,
        cap_loopback=per_client is not None,
        trusted_proxies=trusted,
        reachable=reachable,
    )
