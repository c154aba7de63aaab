"""The guard: normalise the path, check the address, then the key and its scope. Deny by default.

Order matters: a denied address learns nothing about keys (403 before 401), and the path is
normalised and classified (`lmgate.classify`) before anything looks at it, so every later layer
sees one canonical spelling. A forwarding chain from a trusted proxy that names no address where
it must be read is refused (400), never guessed.
Admin routes have their own allowlist (loopback only unless configured). `/metrics` answers to
two: the admin allowlist for admin keys and the metrics allowlist for metrics keys. An address
in neither is refused before any key is looked at; which of the two applies is known only once
the key is, so that second check comes after it. A key, once checked, is taken out of the
request, so no later layer can forward or log it. Every denial is logged and published as an
`auth_denied` event with the address and the reason, never the key.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import structlog

from lmgate.asgi import ASGIApp, Receive, Scope, Send
from lmgate.classify import ROUTE_KEY, classify
from lmgate.errors import Forbidden, GatewayError, TooManyRequests, Unauthorized, send_error
from lmgate.exchange import Exchange, clip, exchange_of
from lmgate.guard.allowlist import IPAddress, NetworkSet, client_address
from lmgate.guard.damping import Damper, bucket
from lmgate.guard.keys import KeyRegistry, Principal, Problem
from lmgate.guard.origin import OriginPolicy
from lmgate.guard.paths import Scope as KeyScope
from lmgate.guard.paths import normalise, quote_path, required_scope, shown_path
from lmgate.key_hours import KeyHours
from lmgate.observe.events import EventBus, address_blocked, auth_denied

_CREDENTIAL_HEADERS = (b"authorization", b"x-api-key")
_READ_METHODS = ("GET",)
_SCOPES_FOR = {
    KeyScope.INFERENCE: "the inference or admin scope",
    KeyScope.METRICS: "the metrics or admin scope",
    KeyScope.ADMIN: "the admin scope",
}
_PROBLEMS = {
    Problem.UNKNOWN: "the API key is not valid",
    Problem.REVOKED: "the API key was revoked",
    Problem.EXPIRED: "the API key has expired",
    Problem.ROTATED: "the API key was rotated: use the new key it was replaced with",
}
log = structlog.get_logger("lmgate.guard")


def presented_keys(scope: Scope) -> set[bytes]:
    """Every key the request carries: `Authorization: Bearer KEY` and/or `x-api-key: KEY`."""
    found: set[bytes] = set()
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, token = bytes(value).partition(b" ")
            if kind.lower() == b"bearer" and token.strip():
                found.add(token.strip())
        elif name == b"x-api-key" and value.strip():
            found.add(bytes(value).strip())
    return found


def principal_of(scope: Scope) -> Principal | None:
    principal: Principal | None = scope.get("lmgate.principal")
    return principal


@dataclass(frozen=True, slots=True)
class Access:
    """Who may come in: the inference, admin and metrics allowlists and the proxies to believe."""

    allow: NetworkSet  # empty: everyone
    admin_allow: NetworkSet  # empty: no one
    trusted_proxies: NetworkSet
    health_public: bool
    metrics_allow: NetworkSet | None = None  # None: the same as `allow`
    forwarded_header: bytes = b"x-forwarded-for"  # the one header read from trusted proxies

    def allowed(self, addr: IPAddress | None) -> bool:
        return not self.allow or addr in self.allow

    def metrics_allowed(self, addr: IPAddress | None) -> bool:
        if self.metrics_allow is None:
            return self.allowed(addr)
        return addr in self.metrics_allow


def outside_hours(principal: Principal, hours: KeyHours) -> None:
    """Refuse a key outside its allowed hours, saying when it opens again."""
    now = time.time()
    if hours.is_open(now):
        return
    opens = hours.opens_at(now)
    when = f"; it opens again {hours.local_text(opens)}" if opens is not None else ""
    raise Forbidden(
        f"key '{principal.name}' may be used {hours.describe()} only{when}",
        code="outside_allowed_hours",
        headers={"Retry-After": str(max(1, math.ceil(opens - now)))} if opens else None,
    )


class GuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: KeyRegistry,
        access: Access,
        damper: Damper,
        bus: EventBus | None = None,
        origin: OriginPolicy | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.access = access
        self.damper = damper
        self.bus = bus
        self.origin = origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ex = exchange_of(scope)
        try:
            needed = self._check(scope, ex)
            if self.origin is not None:
                self.origin.check(scope, needed, keyless=not self.keys.required)
        except GatewayError as exc:
            ex.error = exc.message
            self._denied(ex, exc)
            await send_error(send, exc)
            return
        await self.app(scope, receive, send)

    def _denied(self, ex: Exchange, exc: GatewayError) -> None:
        log.warning(
            "access_denied", client=ex.client, reason=exc.code, status=exc.status, path=ex.path
        )
        if self.bus is not None:
            auth_denied(self.bus, ex, exc)

    def _check(self, scope: Scope, ex: Exchange) -> KeyScope:
        path = normalise(scope["path"])
        route = scope[ROUTE_KEY] = classify(path)
        scope["path"] = route.path
        ex.path = clip(shown_path(route.path))
        scope["raw_path"] = quote_path(route.path).encode()

        peer = scope.get("client")
        access = self.access
        addr = client_address(
            peer[0] if peer else None,
            scope["headers"],
            access.trusted_proxies,
            access.forwarded_header,
        )
        ex.client = str(addr) if addr is not None else None
        needed = required_scope(path.lower(), health_public=access.health_public)
        self._admit(needed, addr, ex)

        if needed is KeyScope.PUBLIC or not self.keys.required:
            return needed
        # An exempt address is never counted, so never blocked: whether it is exempt is asked
        # only when one of its keys fails, not on every request.
        who = bucket(addr)
        wait = self.damper.blocked_for(who)
        if wait:
            raise TooManyRequests(
                "too many invalid API keys from this address; try again later",
                retry_after=wait,
                code="too_many_failed_attempts",
            )
        principal = self._identify(scope, who, addr)
        ex.key_name = principal.name
        scope["headers"] = [h for h in scope["headers"] if h[0] not in _CREDENTIAL_HEADERS]
        if principal.hours is not None:
            outside_hours(principal, principal.hours)
        if not principal.may(needed):
            if principal.scope is KeyScope.METRICS:
                raise Forbidden(
                    f"key '{principal.name}' has the metrics scope: it may only GET /metrics"
                )
            lacks = _SCOPES_FOR.get(needed, f"the {needed} scope")
            raise Forbidden(f"key '{principal.name}' lacks {lacks} for {path}")
        if principal.scope is KeyScope.METRICS and scope["method"] not in _READ_METHODS:
            raise Forbidden(f"key '{principal.name}' has the metrics scope: it may only GET")
        if needed is KeyScope.METRICS:
            self._admit_metrics(principal.scope, addr, ex)
        scope["lmgate.principal"] = principal
        return needed

    def _admit(self, needed: KeyScope, addr: IPAddress | None, ex: Exchange) -> None:
        """The address check made before any key is looked at."""
        access = self.access
        if needed is KeyScope.METRICS and self.keys.required:
            if addr not in access.admin_allow and not access.metrics_allowed(addr):
                raise Forbidden(
                    f"address {ex.client} may not reach /metrics "
                    "(see LMGATE_METRICS_ALLOW, LMGATE_ADMIN_ALLOW)",
                    code="address_not_allowed",
                )
        elif needed in (KeyScope.ADMIN, KeyScope.METRICS):  # no keys: no metrics scope either
            if addr not in access.admin_allow:
                raise Forbidden(
                    f"address {ex.client} may not reach admin routes (/admin/*, /debug/*): "
                    "add it to the gateway's LMGATE_ADMIN_ALLOW, e.g. "
                    f"LMGATE_ADMIN_ALLOW=127.0.0.1,{ex.client}",
                    code="address_not_allowed",
                )
        elif not access.allowed(addr):
            raise Forbidden(f"address {ex.client} is not allowed", code="address_not_allowed")

    def _admit_metrics(self, held: KeyScope, addr: IPAddress | None, ex: Exchange) -> None:
        """`/metrics` with a key: the allowlist that goes with the key's scope, only that one."""
        if held is KeyScope.METRICS and not self.access.metrics_allowed(addr):
            raise Forbidden(
                f"address {ex.client} may not scrape /metrics (see LMGATE_METRICS_ALLOW)",
                code="address_not_allowed",
            )
        if held is KeyScope.ADMIN and addr not in self.access.admin_allow:
            raise Forbidden(
                f"address {ex.client} may not reach admin routes (see LMGATE_ADMIN_ALLOW)",
                code="address_not_allowed",
            )

    def _failed(self, who: str, addr: IPAddress | None) -> None:
        """Count a bad key against `who` (not from an exempt address); announce a new block."""
        if not self.damper.counts(addr):
            return
        block = self.damper.failed(who)
        if block:
            log.warning("address_blocked", address=who, seconds=block)
            if self.bus is not None:
                address_blocked(self.bus, who, block)

    def _identify(self, scope: Scope, who: str, addr: IPAddress | None) -> Principal:
        tokens = presented_keys(scope)
        if not tokens:
            raise Unauthorized(
                "an API key is required: send 'Authorization: Bearer KEY' or 'x-api-key: KEY'",
                code="missing_api_key",
            )
        if len(tokens) > 1:
            self._failed(who, addr)
            raise Unauthorized(
                "the request carries more than one API key; send exactly one",
                code="conflicting_api_keys",
            )
        found = self.keys.identify(tokens.pop())
        if isinstance(found, Problem):
            self._failed(who, addr)
            raise Unauthorized(_PROBLEMS[found], code=found.value)
        return found
