"""The one canonical classification of a request path: what LM Studio will take it for.

LM Studio's server (Express) routes without regard to letter case or a trailing slash, so
`/V1/Chat/Completions/` is a chat completion there. Every decision lmgate makes on a path
(inference limits, model access, listing filters, usage, events, injection, which app serves
it) reads the `Route` computed here once, from the normalised path, so no spelling can be one
thing to the gateway and another to the upstream.

A recognised route goes upstream in its canonical spelling (lower case, no trailing slash,
shorthands mapped to `/v1/...`): the upstream answers exactly the route lmgate classified,
whatever its own routing rules. A model id inside a model path keeps its spelling, as a body's
`model` field does. An unrecognised path under the proxied prefixes goes as the client spelled
it: lmgate decides nothing on it beyond "proxied, not inference".
"""

from __future__ import annotations

from typing import NamedTuple

from lmgate.asgi import Scope

# Canonical path -> inference kind. Only POSTs to these have their body parsed.
ENDPOINTS: dict[str, str] = {
    "/v1/chat/completions": "chat",
    "/api/v0/chat/completions": "chat",
    "/v1/completions": "completions",
    "/api/v0/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/api/v0/embeddings": "embeddings",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
    "/api/v1/chat": "native_chat",
}
# Canonical path -> (list field, id field) of each surface's model list.
LISTINGS: dict[str, tuple[str, str]] = {
    "/v1/models": ("data", "id"),
    "/api/v0/models": ("data", "id"),
    "/api/v1/models": ("models", "key"),
}
# The TypeScript edition's shorthand routes.
SHORTHAND: dict[str, str] = {
    "/chat/completions": "/v1/chat/completions",
    "/completions": "/v1/completions",
    "/models": "/v1/models",
    "/embeddings": "/v1/embeddings",
}
PROXY_PREFIXES = ("/v1/", "/api/v0/", "/api/v1/")
_PROXY_ROOTS = ("/v1", "/api/v0")
# `{prefix}{model id}`; the id may hold slashes (`/api/v0/models/qwen/qwen3-4b`).
MODEL_PREFIXES = ("/v1/models/", "/api/v0/models/", "/api/v1/models/")
# LM Studio's model management: routes of their own under a model prefix, never a model id.
MANAGEMENT = ("/api/v1/models/load", "/api/v1/models/unload", "/api/v1/models/download")
_UNDER_MANAGEMENT = tuple(m + "/" for m in MANAGEMENT)

ROUTE_KEY = "lmgate.route"


class Route(NamedTuple):
    """What a (normalised) path is. `path` is the canonical spelling, the one sent upstream.
    A tuple: immutable, and built in a fraction of a frozen dataclass's time."""

    path: str
    proxied: bool = False
    endpoint: str | None = None  # inference kind of a POST ("chat", ...)
    listing: tuple[str, str] | None = None  # a model list's (list field, id field), on GET
    model: str | None = None  # the model a model path names

    def kind(self, method: str) -> str | None:
        """The inference kind of this request: only a POST to an inference route has one."""
        return self.endpoint if method == "POST" else None


def _known() -> dict[str, Route]:
    known = {path: Route(path, True, endpoint=kind) for path, kind in ENDPOINTS.items()}
    known |= {path: Route(path, True, listing=shape) for path, shape in LISTINGS.items()}
    known |= {path: Route(path, True) for path in MANAGEMENT}
    known |= {short: known[full] for short, full in SHORTHAND.items()}
    return known


# Every recognised route under its canonical spelling (and the shorthands): the common request
# is one dict lookup.
_KNOWN = _known()


def classify(path: str) -> Route:
    """The route a normalised path names. Idempotent: `classify(classify(p).path)` is the same."""
    route = _KNOWN.get(path)
    if route is not None:
        return route
    lower = path.lower()
    trimmed = path[:-1] if len(path) > 1 and path.endswith("/") else path
    if len(trimmed) < len(path):
        lower = lower[:-1]
    route = _KNOWN.get(lower)
    if route is not None:
        return route
    if lower.startswith(MODEL_PREFIXES) and not lower.startswith(_UNDER_MANAGEMENT):
        for prefix in MODEL_PREFIXES:
            if lower.startswith(prefix):
                model = trimmed[len(prefix) :]
                return Route(prefix + model, True, model=model)
    if lower.startswith(PROXY_PREFIXES) or lower in _PROXY_ROOTS:
        return Route(path, True)
    return Route(path)


def route_of(scope: Scope) -> Route:
    """The request's route, as the guard classified it (or now, where no guard ran)."""
    route: Route | None = scope.get(ROUTE_KEY)
    return route if route is not None else classify(scope["path"])


def is_proxied(path: str) -> bool:
    """Whether the proxy serves `path` (any spelling); the common cases skip `classify`."""
    if path in _KNOWN or path[:8].lower().startswith(PROXY_PREFIXES):
        return True
    return classify(path).proxied
