"""Monitoring routes: `/debug/status`, `/debug/metrics`, `/metrics`, `/debug/requests`,
`/debug/queue`.

`/debug/stream` lives in its own module and is mounted here. `DELETE /debug/requests/{id}`
cancels every in-flight request with that id (ids are the `X-Request-ID` a client may choose,
so two can share one). The upstream connection closes, which stops the generation; the client
gets a `request_cancelled` error (503), or an error frame if its stream had started.

With several workers every answer here covers the worker that served it (`worker` in
`/debug/status` and `/debug/metrics`); a request being served by another worker is not
found, and the 404 says so.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import JSONResponse, Response

from lmgate import params
from lmgate.errors import GatewayError, NotFound
from lmgate.gateway import gateway_of
from lmgate.observe.debug_stream import router as stream_router

router = APIRouter(tags=["monitoring"])
router.include_router(stream_router)


@router.get("/debug/status")
async def debug_status(request: Request) -> dict[str, Any]:
    gw = gateway_of(request)
    status = gw.stats.status(gw.state.state.active_model)
    blocks = gw.security.damper.blocks()[:100]  # all of them: GET /admin/blocks
    return status | {"blocks": blocks, "worker": gw.worker.as_json()}


@router.get("/debug/metrics")
async def debug_metrics(request: Request) -> dict[str, Any]:
    """The TypeScript edition's four sections, then windows, upstream health, events, usage."""
    gw = gateway_of(request)
    state = gw.state.state
    legacy = {
        "modelInfo": {
            "activeModel": state.active_model,
            "defaultInference": state.default_inference,
            "loadConfig": state.load_configs.get(state.active_model or "", None),
            "activatedAt": state.activated_at,
        },
        "performance": gw.stats.performance(),
        "recentActivity": [e.as_json() for e in gw.bus.recent(20)],
        "system": gw.stats.system(),
    }
    return legacy | gw.obs.snapshot()


@router.get("/debug/queue")
async def debug_queue(request: Request) -> dict[str, Any]:
    """The scheduler's queue and each model's slots (the gateway's one queue)."""
    return await gateway_of(request).scheduler.queue_json()


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    return Response(gateway_of(request).obs.render_prometheus(), media_type=CONTENT_TYPE_LATEST)


REASON = "cancelled by an operator"


class NotCancellable(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "not_cancellable"


@router.get("/debug/requests")
async def list_requests(
    request: Request, limit: int = Query(50, ge=0, le=10_000)
) -> dict[str, Any]:
    gw = gateway_of(request)
    tracker = gw.obs.requests
    own = request.scope["lmgate.exchange"].request_id
    live = [r for r in tracker.in_flight() if r["requestId"] != own]
    return {
        "inFlight": live,
        "completed": tracker.completed(limit),
        "worker": gw.worker.as_json(),
    }


@router.delete("/debug/requests/{request_id}")
async def cancel_request(request_id: str, request: Request) -> JSONResponse:
    params.text(request_id, "request_id", limit=200)
    gw = gateway_of(request)
    tracker = gw.obs.requests
    found = tracker.find(request_id)
    if not found:
        message = f"no request {request_id!r} is in flight"
        if gw.worker.shared:
            w = gw.worker
            message += (
                f" on worker {w.index} (pid {w.pid}); it may be in flight on another of the "
                f"{w.count} workers: this call reaches one worker at a time, so try again"
            )
        raise NotFound(message, code="request_not_found")
    cancelled = tracker.cancel(request_id, REASON)
    if not cancelled:
        raise NotCancellable(f"request {request_id!r} cannot be cancelled (not a proxied call)")
    return JSONResponse(
        {"requestId": request_id, "cancelled": len(cancelled), "reason": REASON},
        status_code=202,
    )
