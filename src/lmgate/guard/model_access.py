"""Keys limited to model patterns: refuse other models, and list only the allowed ones.

A key with patterns (`qwen*`, `nomic-*`) may name only matching models in inference bodies
(checked after injection, so an injected default model is checked too) and in model paths
(`/v1/models/{id}`). Model listings are rewritten to the allowed entries. A request whose model
cannot be known (no model at all, or a POST to an endpoint whose body lmgate does not parse) is
refused: deny by default. Which path is a listing or a model path is `lmgate.classify`'s
answer, whatever the client's spelling.

With several upstreams, the name checked is the one the client used: a gateway-level alias is
checked as the alias (this hook runs before the scheduler writes an upstream's own key into the
body), and allowing an alias grants nothing about the keys it maps to, which are checked as
names of their own when a client uses them. Merged listings carry aliases as entries of their
own, so a key sees the aliases its patterns allow, and only those.
"""

from __future__ import annotations

from typing import Any

import orjson

from lmgate.classify import classify
from lmgate.errors import Forbidden, UpstreamError
from lmgate.exchange import Exchange, clip
from lmgate.guard.auth import principal_of
from lmgate.guard.keys import Principal
from lmgate.hooks import ProxyRequest, ResponseTap

_MAX_LISTING = 16 * 1024 * 1024


def _refuse(principal: Principal, what: str) -> Forbidden:
    allowed = ", ".join(principal.models)
    return Forbidden(f"key '{principal.name}' {what}; allowed: {allowed}", code="model_not_allowed")


class ListingFilter:
    """Holds a model listing back, then sends only the entries the key may use."""

    def __init__(self, principal: Principal, field: str, id_field: str) -> None:
        self.principal = principal
        self.field = field
        self.id_field = id_field
        self.active = False
        self.buffer = bytearray()

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        self.active = status == 200
        if not self.active:
            return headers
        for name, value in headers:
            if name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
                raise UpstreamError("the upstream compressed its model list; cannot filter it")
        return [(k, v) for k, v in headers if k not in (b"content-length", b"etag")]

    def feed(self, chunk: bytes) -> bytes:
        if not self.active:
            return chunk
        if len(self.buffer) + len(chunk) > _MAX_LISTING:
            raise UpstreamError("the upstream's model list is too large to filter")
        self.buffer += chunk
        return b""

    def end(self) -> bytes:
        if not self.active:
            return b""
        try:
            listing: Any = orjson.loads(self.buffer)
            entries = listing[self.field]
            assert isinstance(entries, list)
        except (orjson.JSONDecodeError, KeyError, TypeError, AssertionError):
            return orjson.dumps({self.field: []})  # fail closed: nothing we cannot vet
        listing[self.field] = [
            e
            for e in entries
            if isinstance(e, dict)
            and isinstance(e.get(self.id_field), str)
            and self.principal.allows_model(e[self.id_field])
        ]
        return orjson.dumps(listing)


class ModelAccess:
    """A proxy hook; does nothing for keys without model patterns."""

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        principal = principal_of(request.scope)
        if principal is None or not principal.models:
            return None
        if request.kind is not None:
            model = request.body.get("model") if request.body is not None else None
            if not isinstance(model, str) or not model:
                raise _refuse(principal, "must name its model in 'model'")
            if not principal.allows_model(model):
                raise _refuse(principal, f"may not use model '{clip(model)}'")
            return None
        if request.method not in ("GET", "HEAD"):
            raise _refuse(
                principal, f"is limited to some models; {clip(request.path)} cannot be checked"
            )
        route = classify(request.path)  # canonical already: one lookup, or the model path's id
        if route.listing is not None and request.method == "GET":
            scope = request.scope
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"accept-encoding"]
            return ListingFilter(principal, *route.listing)
        if route.model is not None and not principal.allows_model(route.model):
            raise _refuse(principal, f"may not use model '{clip(route.model)}'")
        return None
