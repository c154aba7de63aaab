"""CORS for browser clients on the LAN; off unless origins are configured.

Sits outside the guard: a browser's preflight (`OPTIONS` with `Access-Control-Request-*`)
never carries credentials, so it is answered here, and every real request then meets the
guard as usual, its answers (401/403/429 too) carrying the CORS headers so the page can read
them. Keys travel in headers, never in cookies, so credentialed CORS stays off.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware

from lmgate.asgi import ASGIApp

EXPOSE_HEADERS = ("x-request-id", "retry-after")


def check_origins(origins: Sequence[str]) -> list[str]:
    """Origins as browsers send them (`scheme://host[:port]`, no path), or `*`."""
    clean: list[str] = []
    for origin in origins:
        origin = origin.strip().rstrip("/")
        if origin == "*":
            clean.append(origin)
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise ValueError(f"CORS origin '{origin}' must look like http://host:port")
        clean.append(origin)
    return clean


def with_cors(app: ASGIApp, origins: Sequence[str]) -> ASGIApp:
    """`app` answering CORS for `origins`; `app` itself when none are configured."""
    if not origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=check_origins(origins),
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["*"],  # SDKs add headers of their own; keys are never cookies
        expose_headers=list(EXPOSE_HEADERS),
        allow_credentials=False,
        max_age=600,
    )
