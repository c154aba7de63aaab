"""`create_app(settings)`: the whole middleware stack and route table on one screen.

    ExchangeMiddleware   one Exchange per request; X-Request-ID; observers at start/finish
      CORS               only when origins are configured; answers preflights
      GuardMiddleware    normalise path -> allowlist 403 -> damping 429 -> key 401 -> scope 403
        InputLimits      body size (413) and read deadline (408), for admitted requests only
        dispatch         /v1/*, /api/v0/*, /api/v1/*, shorthands -> ProxyApp (pure ASGI)
                         /dashboard, /dashboard/* -> DashboardApp (static files, public)
                         everything else -> control plane (FastAPI: admin, debug, health)

The proxy never passes through FastAPI: no validation models or routing tables on the hot path.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from lmgate.admin.inventory_routes import router as inventory_router
from lmgate.admin.keys_routes import router as keys_router
from lmgate.admin.routes import router as admin_router
from lmgate.admin.usage_routes import router as usage_router
from lmgate.asgi import ASGIApp, Receive, Scope, Send
from lmgate.dashboard.routes import DashboardApp, is_dashboard
from lmgate.errors import BadRequest, GatewayError, NotFound
from lmgate.exchange import ExchangeMiddleware, clip
from lmgate.gateway import Gateway
from lmgate.observe.routes import router as monitoring_router
from lmgate.proxy.relay import ProxyApp, is_proxied
from lmgate.service_routes import router as service_router
from lmgate.settings import Settings
from lmgate.store.db import storage_error
from lmgate.workers.slot import Worker

log = structlog.get_logger("lmgate.app")


def _error_response(error: GatewayError) -> Response:
    return Response(
        error.body(), status_code=error.status, media_type="application/json", headers=error.headers
    )


def _control_plane(gw: Gateway) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    app = FastAPI(
        title="lmgate",
        summary="Admin and monitoring API of the lmgate LLM gateway",
        lifespan=lifespan,
        openapi_url="/admin/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gw
    app.include_router(service_router)
    app.include_router(admin_router)
    app.include_router(keys_router)
    app.include_router(inventory_router)
    app.include_router(monitoring_router)
    app.include_router(usage_router)

    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, exc: GatewayError) -> Response:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        where = ".".join(loc)
        msg = str(first.get("msg", "invalid request"))
        if first.get("type") == "json_invalid":
            return _error_response(BadRequest(f"request body is not valid JSON: {msg}"))
        text = f"{where}: {msg}" if where else msg
        return _error_response(BadRequest(text, code="invalid_value", param=where or None))

    @app.exception_handler(sqlite3.Error)
    async def storage_failed(request: Request, exc: sqlite3.Error) -> Response:
        error = storage_error(exc, gw.db.path)  # a full disk is 507, not a plain-text 500
        log.error(
            "storage_failed", path=clip(request.url.path), status=error.status, error=str(exc)
        )
        return _error_response(error)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return _error_response(
                NotFound(f"no route for {request.method} {clip(request.url.path)}")
            )
        error = GatewayError(str(exc.detail), code=f"http_{exc.status_code}")
        error.status = exc.status_code
        error.type = "invalid_request_error"
        return _error_response(error)

    return app


_FORMISH = (b"application/x-www-form-urlencoded", b"text/plain")


def json_bodies(app: ASGIApp) -> ASGIApp:
    """Admin bodies are JSON whatever `curl -d` claims (it sends a form content type)."""

    async def shim(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            headers = scope["headers"]
            for i, (name, value) in enumerate(headers):
                if name == b"content-type" and value.split(b";")[0].strip() in _FORMISH:
                    headers = [
                        *headers[:i],
                        (b"content-type", b"application/json"),
                        *headers[i + 1 :],
                    ]
                    scope = {**scope, "headers": headers}
                    break
        await app(scope, receive, send)

    return shim


class LmgateApp(ExchangeMiddleware):
    """The ASGI application; `.gateway` gives tests and the CLI its parts. It is the outermost
    layer itself rather than a wrapper awaiting it: one coroutine less per open request."""

    def __init__(self, settings: Settings, worker: Worker | None = None) -> None:
        self.gateway = gw = Gateway.build(settings, worker)
        control = json_bodies(_control_plane(gw))
        proxy = ProxyApp(
            gw.upstream,
            gw.state,
            gw.inference_events,
            max_body_bytes=settings.max_body_bytes,
            forward_credentials=not gw.security.keys.required,
            hooks=gw.proxy_hooks(),
        )

        dashboard = DashboardApp()

        def dispatch(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
            """The chosen app's coroutine, for the caller to await (no frame of its own)."""
            if scope["type"] == "http" and is_proxied(scope["path"]):
                return proxy(scope, receive, send)
            if scope["type"] == "http" and is_dashboard(scope["path"]):
                return dashboard(scope, receive, send)
            return control(scope, receive, send)

        super().__init__(gw.security.wrap(dispatch, gw.bus), observers=gw.observers())


def create_app(settings: Settings, worker: Worker | None = None) -> LmgateApp:
    """`worker`: this process's place in `serve --workers N`; None = the only process."""
    return LmgateApp(settings, worker)
