"""The guard: normalise the path, check the address, then the key and its scope. Deny by default.

Order matters: a denied address learns nothing about keys (403 before 401), and the path is
normalised before anything looks at it, so every later layer sees one canonical spelling.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from lmgate.asgi import ASGIApp, Receive, Scope, Send
from lmgate.errors import Forbidden, GatewayError, Unauthorized, send_error
from lmgate.exchange import exchange_of
from lmgate.guard.allowlist import NetworkSet, client_address
from lmgate.guard.paths import Scope as KeyScope
from lmgate.guard.paths import normalise, quote_path, required_scope


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key's name (never the key) and what it may do."""

    name: str
    scope: KeyScope

    def may(self, needed: KeyScope) -> bool:
        return needed is not KeyScope.ADMIN or self.scope is KeyScope.ADMIN


class KeyRing:
    """Bootstrap keys from settings. Every candidate is compared, in constant time each."""

    def __init__(self, keys: Iterable[tuple[str, KeyScope, str]]) -> None:
        self._keys = tuple((name, scope, secret.encode()) for name, scope, secret in keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def identify(self, token: bytes) -> Principal | None:
        found: Principal | None = None
        for name, scope, secret in self._keys:
            if hmac.compare_digest(token, secret) and found is None:
                found = Principal(name, scope)
        return found


def presented_key(scope: Scope) -> bytes | None:
    """`Authorization: Bearer KEY` (OpenAI clients) or `x-api-key: KEY` (Anthropic clients)."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, token = bytes(value).partition(b" ")
            if kind.lower() == b"bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return bytes(value).strip()
    return None


class GuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: KeyRing,
        allow: NetworkSet,
        trusted_proxies: NetworkSet,
        health_public: bool,
    ) -> None:
        self.app = app
        self.keys = keys
        self.allow = allow
        self.trusted = trusted_proxies
        self.health_public = health_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ex = exchange_of(scope)
        try:
            self._check(scope)
        except GatewayError as exc:
            ex.error = exc.message
            await send_error(send, exc)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> None:
        ex = exchange_of(scope)
        path = normalise(scope["path"])
        scope["path"] = ex.path = path
        scope["raw_path"] = quote_path(path).encode()

        peer = scope.get("client")
        addr = client_address(peer[0] if peer else None, scope["headers"], self.trusted)
        ex.client = str(addr) if addr is not None else None
        if self.allow and addr not in self.allow:
            raise Forbidden(f"address {ex.client} is not allowed", code="address_not_allowed")

        needed = required_scope(path.lower(), health_public=self.health_public)
        if needed is KeyScope.PUBLIC or not self.keys:
            return
        token = presented_key(scope)
        if token is None:
            raise Unauthorized(
                "an API key is required: send 'Authorization: Bearer KEY' or 'x-api-key: KEY'",
                code="missing_api_key",
            )
        principal = self.keys.identify(token)
        if principal is None:
            raise Unauthorized("the API key is not valid")
        ex.key_name = principal.name
        if not principal.may(needed):
            raise Forbidden(f"key '{principal.name}' lacks the admin scope for {path}")
        scope["lmgate.principal"] = principal
