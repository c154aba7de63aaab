"""`/dashboard`: the operator page, served from memory as plain static files.

The page holds no secret, so the guard lets anyone the allowlist admits fetch it; all it shows
comes from the admin API, called with the key the operator types in. Only the files shipped
in `static/` exist here (a table built once at start, so no request path can reach outside it).
Every answer carries a Content-Security-Policy that allows this origin only, with no inline
script or style, and refuses framing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from lmgate.asgi import Message, Receive, Scope, Send, header
from lmgate.errors import GatewayError, NotFound, send_error

PREFIX = "/dashboard"

_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".json": b"application/json",
}

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: bytes
    etag: bytes


def is_dashboard(path: str) -> bool:
    """Whether a (normalised) path belongs to the dashboard."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def load_assets() -> dict[str, Asset]:
    """The shipped files by request path (`/dashboard/app.js`), plus the index at `/dashboard/`."""
    assets: dict[str, Asset] = {}
    for item in resources.files(__package__).joinpath("static").iterdir():
        suffix = "." + item.name.rpartition(".")[2]
        if not item.is_file() or suffix not in _TYPES:
            continue
        body = item.read_bytes()
        etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'
        assets[f"{PREFIX}/{item.name}"] = Asset(body, _TYPES[suffix], etag)
    if f"{PREFIX}/index.html" in assets:
        assets[PREFIX + "/"] = assets[f"{PREFIX}/index.html"]
    return assets


class DashboardApp:
    """GET/HEAD of the shipped files; `/dashboard` redirects to `/dashboard/`."""

    def __init__(self, assets: dict[str, Asset] | None = None) -> None:
        self.assets = load_assets() if assets is None else assets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            error = MethodNotAllowed(
                f"{method} is not allowed here", headers={"Allow": "GET, HEAD"}
            )
            await _error(send, error)
            return
        path = scope["path"]
        if path == PREFIX:
            # Relative, so the page also works behind a reverse proxy that adds a prefix.
            await _respond(
                send, 308, [(b"location", b"dashboard/"), (b"content-length", b"0")], b""
            )
            return
        asset = self.assets.get(path)
        if asset is None:
            await _error(send, NotFound(f"no dashboard file at {path}"))
            return
        headers = [
            (b"content-type", asset.content_type),
            (b"etag", asset.etag),
            (b"cache-control", b"no-cache"),
        ]
        if header(scope, b"if-none-match") == asset.etag:
            await _respond(send, 304, headers, b"")
            return
        headers.append((b"content-length", str(len(asset.body)).encode()))
        await _respond(send, 200, headers, b"" if method == "HEAD" else asset.body)


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, *SECURITY_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, error: GatewayError) -> None:
    """lmgate's usual JSON error, with the dashboard's security headers added."""

    async def secured(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], *SECURITY_HEADERS]}
        await send(message)

    await send_error(secured, error)
