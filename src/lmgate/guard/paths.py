"""Path normalisation and classification, done once before any check.

Every spelling of a path (`//admin`, `/v1/../admin`, `%2561dmin`, `/ADMIN`) must classify the
same way, or a key with the inference or metrics scope could reach admin routes or LM Studio's
model management endpoints. The normalised path is also what is forwarded upstream.
"""

from __future__ import annotations

import re
from enum import StrEnum
from urllib.parse import quote, unquote

from lmgate.errors import BadRequest

_MAX_DECODE_ROUNDS = 4
_SAFE = "/:@!$&'()*+,;=-._~"
# A path that normalising and quoting would leave as it is: segments of characters `quote`
# keeps (no `%`, `\\`, controls or spaces), none empty, `.` or `..`. Nearly every request's path.
_PLAIN = re.compile(r"/|(?:/(?!\.\.?(?:/|$))[A-Za-z0-9:@!$&'()*+,;=\-._~]+)+/?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Scope(StrEnum):
    """What a key may do, and what a path needs. Admin includes inference and metrics; metrics
    (a Prometheus scraper's key) reaches `/metrics` and the service routes, nothing else."""

    PUBLIC = "public"
    SERVICE = "service"  # a path only: any valid key will do (`/ready`, a protected `/health`)
    INFERENCE = "inference"
    METRICS = "metrics"
    ADMIN = "admin"


ADMIN_PREFIXES = ("/admin", "/debug", "/metrics")
# Exactly these, no sub-path: a metrics key reaches one route, so `/metrics/...` stays admin.
METRICS_PATHS = ("/metrics",)
SERVICE_PATHS = ("/health", "/ready")
# LM Studio's own model management: loading and unloading models is an operator's act.
UPSTREAM_ADMIN_PREFIXES = (
    "/api/v1/models/load",
    "/api/v1/models/unload",
    "/api/v1/models/download",
)


def normalise(path: str) -> str:
    """Decode repeatedly, fold `\\` and `//`, resolve `.` and `..`; never climb above `/`."""
    if _PLAIN.fullmatch(path):
        return path
    decoded = path
    for _ in range(_MAX_DECODE_ROUNDS):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    else:
        raise BadRequest("request path is encoded too many times", code="invalid_path")
    if _CONTROL.search(decoded):
        raise BadRequest("request path contains control characters", code="invalid_path")
    parts: list[str] = []
    for segment in decoded.replace("\\", "/").split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if parts:
                parts.pop()
            continue
        parts.append(segment)
    trailing = "/" if decoded.endswith("/") and parts else ""
    return "/" + "/".join(parts) + trailing


def quote_path(path: str) -> str:
    """The normalised path as it goes on the wire upstream."""
    return path if _PLAIN.fullmatch(path) else quote(path, safe=_SAFE)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def required_scope(lower_path: str, *, health_public: bool) -> Scope:
    """The scope a request to `lower_path` (normalised, lower-cased) needs. Deny by default."""
    if lower_path in PUBLIC_PATHS or (health_public and lower_path == "/health"):
        return Scope.PUBLIC
    if any(_under(lower_path, p) for p in PUBLIC_PREFIXES):
        return Scope.PUBLIC
    if lower_path in METRICS_PATHS:
        return Scope.METRICS
    if any(_under(lower_path, p) for p in ADMIN_PREFIXES + UPSTREAM_ADMIN_PREFIXES):
        return Scope.ADMIN
    if lower_path in SERVICE_PATHS:
        return Scope.SERVICE
    return Scope.INFERENCE


# Paths anyone may reach. Add to it on purpose only; `/health` is public unless configured.
# `/`: it only points to the (public) dashboard.
PUBLIC_PATHS: tuple[str, ...] = ("/",)
# The dashboard's static files: they hold no secret, and the page asks for the admin key itself.
# Still behind the allowlist; every API call the page makes needs the admin key.
# `/pair/CODE`: a device's pairing page; the code in the path is its only credential.
PAIR_PREFIX = "/pair"
PUBLIC_PREFIXES: tuple[str, ...] = ("/dashboard", PAIR_PREFIX)


# What the pairing page itself loads: no credential in these paths, so records show them.
_PAIR_FILES = frozenset(
    (
        PAIR_PREFIX,
        "/pair/static/pair.js",
        "/pair/static/pair.css",
        "/pair/ca.pem",
        "/pair/ca.crt",
        "/pair/ca.mobileconfig",
    )
)
_PAIR_MASK = PAIR_PREFIX + "/[code]"


def shown_path(path: str) -> str:
    """The path as records, logs and messages show it. A pairing code is a credential, so
    whatever follows `/pair/` is masked, however the path spells it (`//PAIR/C`, `/%70air/C/`,
    `/pair/C%00`): raw or normalised, refused or routed, a record never carries a code."""
    if "%" not in path and "\\" not in path and "/pair/" not in path.lower():
        return path  # nearly every request: nothing could normalise to /pair/...
    try:
        folded = normalise(path).lower()
    except BadRequest:
        # A path the guard refuses: masked when any decoding of it mentions /pair/.
        folded = path
        for _ in range(_MAX_DECODE_ROUNDS + 1):
            folded = unquote(folded)
        folded = "/" + folded.replace("\\", "/").lower().lstrip("/")
        return _PAIR_MASK if "pair/" in folded else path
    if not folded.startswith(PAIR_PREFIX + "/") or folded.rstrip("/") in _PAIR_FILES:
        return path
    return _PAIR_MASK
