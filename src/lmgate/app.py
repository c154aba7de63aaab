"""`create_app(settings)`: the whole middleware stack and route table on one screen.

    ExchangeMiddleware   one Exchange per request; X-Request-ID; observers at start/finish
      CORS               only when origins are configured; answers preflights
      GuardMiddleware    normalise path -> allowlist 403 -> damping 429 -> key 401 -> scope 403
                         -> no keys: Host 403 -> admin routes: cross-site 403
        InputLimits      body size (413) and read deadline (408), for admitted requests only
        dispatch         TRACE, CONNECT, unknown methods -> 405 (never forwarded)
                         admin writes whose body is not declared JSON -> 415
                         /v1/*, /api/v0/*, /api/v1/*, shorthands -> ProxyApp (pure ASGI)
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

from lmgate.admin.blocks_routes import router as blocks_router
from lmgate.admin.download_routes import router as downloads_router
from lmgate.admin.inventory_routes import router as inventory_router
from lmgate.admin.keys_routes import router as keys_router
from lmgate.admin.routes import router as admin_router
from lmgate.admin.usage_routes import router as usage_router
from lmgate.asgi import Receive, Scope, Send
from lmgate.dashboard.routes import DashboardApp, is_dashboard
from lmgate.errors import BadRequest, GatewayError, NotFound, send_error
from lmgate.exchange import ExchangeMiddleware, clip, exchange_of
from lmgate.gateway import Gateway
from lmgate.guard.origin import JSON_ONLY, json_problem
from lmgate.guard.paths import Scope as KeyScope
from lmgate.guard.paths import shown_path
from lmgate.observe.routes import router as monitoring_router
from lmgate.pairing.routes import admin_router as pairing_router
from lmgate.pairing.routes import public_router as pair_router
from lmgate.proxy.relay import ProxyApp, is_proxied
from lmgate.redaction import operator_view
from lmgate.service_routes import router as service_router
from lmgate.settings import Settings
from lmgate.store.db import storage_error
from lmgate.upstreams.routes import router as upstreams_router
from lmgate.upstreams.routing import Router
from lmgate.workers.slot import Worker

log = structlog.get_logger("lmgate.app")
_LOCATIONS = ("body", "query", "path", "header", "cookie")


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
    app.include_router(blocks_router)
    app.include_router(downloads_router)
    app.include_router(inventory_router)
    app.include_router(upstreams_router)
    app.include_router(monitoring_router)
    app.include_router(usage_router)
    app.include_router(pairing_router)
    app.include_router(pair_router)

    @app.exception_handler(GatewayError)
    async def gateway_error(_: Request, exc: GatewayError) -> Response:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        # A body field is named by its path in the body, a query parameter by its name.
        loc = [str(p) for p in first.get("loc", ())]
        if loc and loc[0] in _LOCATIONS:
            loc = loc[1:]
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
            "storage_failed",
            path=clip(shown_path(request.url.path)),
            status=error.status,
            error=str(exc),
        )
        return _error_response(error)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return _error_response(
                NotFound(f"no route for {request.method} {clip(shown_path(request.url.path))}")
            )
        error = GatewayError(str(exc.detail), code=f"http_{exc.status_code}")
        error.status = exc.status_code
        error.type = "invalid_request_error"
        return _error_response(error)

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> Response:
        """A bug still answers in the one error shape, never as a plain-text 500 (the
        server logs the traceback)."""
        return _error_response(GatewayError("internal error; see the gateway's log"))

    return app


# Methods lmgate serves or relays. TRACE would echo a request (its headers too) back from
# the upstream, CONNECT asks for a tunnel; neither, nor anything unknown, is ever forwarded.
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
ALLOW = ", ".join(sorted(METHODS))


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


def _method_error(scope: Scope) -> GatewayError:
    return MethodNotAllowed(
        f"method {scope['method'][:32]} is not allowed; lmgate answers {ALLOW}",
        headers={"Allow": ALLOW},
    )


async def _refuse(scope: Scope, send: Send, error: GatewayError) -> None:
    exchange_of(scope).error = error.message
    await send_error(send, error)


class LmgateApp(ExchangeMiddleware):
    """The ASGI application; `.gateway` gives tests and the CLI its parts. It is the outermost
    layer itself rather than a wrapper awaiting it: one coroutine less per open request."""

    def __init__(self, settings: Settings, worker: Worker | None = None) -> None:
        self.gateway = gw = Gateway.build(settings, worker)
        control = _control_plane(gw)
        proxy = ProxyApp(
            gw.upstream,
            gw.state,
            gw.inference_events,
            max_body_bytes=settings.max_body_bytes,
            forward_credentials=not gw.security.keys.required,
            hooks=gw.proxy_hooks(),
            router=Router(gw.upstreams, gw.power.rerouting(gw.scheduler.reroute)),
        )

        dashboard = DashboardApp()
        keys = gw.security.keys
        admin = KeyScope.ADMIN

        def dispatch(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
            """The chosen app's coroutine, for the caller to await (no frame of its own)."""
            if scope["type"] == "http":
                # Who may see where the upstream is: an admin key, or anyone when keys are off.
                principal = scope.get("lmgate.principal")
                operator_view.set(
                    principal.scope is admin if principal is not None else not keys.required
                )
                if scope["method"] not in METHODS:
                    return _refuse(scope, send, _method_error(scope))
                if JSON_ONLY in scope and (problem := json_problem(scope)) is not None:
                    return _refuse(scope, send, problem)
            if scope["type"] == "http" and is_proxied(scope["path"]):
                return proxy(scope, receive, send)
            if scope["type"] == "http" and is_dashboard(scope["path"]):
                return dashboard(scope, receive, send)
            return control(scope, receive, send)

        super().__init__(gw.security.wrap(dispatch, gw.bus), observers=gw.observers())


def create_app(settings: Settings, worker: Worker | None = None) -> LmgateApp:
    """`worker`: this process's place in `serve --workers N`; None = the only process."""
    return LmgateApp(settings, worker)
