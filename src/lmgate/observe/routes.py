"""Monitoring routes: `/debug/stream` (SSE), `/debug/status`, `/debug/metrics`, `/metrics`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import Response

from lmgate.gateway import gateway_of

router = APIRouter(tags=["monitoring"])


def _event(type_: str, data: dict[str, Any], id_: int | None = None) -> ServerSentEvent:
    return ServerSentEvent(
        data=orjson.dumps(data).decode(),
        event=type_,
        id=str(id_) if id_ is not None else None,
        sep="\n",
    )


@router.get("/debug/stream")
async def debug_stream(request: Request, types: str | None = None) -> EventSourceResponse:
    gw = gateway_of(request)
    wanted = [t.strip() for t in types.split(",") if t.strip()] if types else None
    last_id = request.headers.get("last-event-id", "")
    sub = gw.bus.subscribe(types=wanted, after_id=int(last_id) if last_id.isdigit() else None)

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            yield _event(
                "connected",
                {"type": "connected", "activeModel": gw.state.state.active_model},
            )
            reported = 0
            while True:
                event = await sub.queue.get()
                if sub.dropped > reported:
                    lost = sub.dropped - reported
                    reported = sub.dropped
                    yield _event("events_lost", {"type": "events_lost", "count": lost})
                yield _event(event.type, event.as_json(), event.id)
        finally:
            gw.bus.unsubscribe(sub)

    return EventSourceResponse(
        events(),
        ping=gw.settings.keepalive_seconds,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep="\n"),
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/debug/status")
async def debug_status(request: Request) -> dict[str, Any]:
    gw = gateway_of(request)
    return gw.stats.status(gw.state.state.active_model)


@router.get("/debug/metrics")
async def debug_metrics(request: Request) -> dict[str, Any]:
    gw = gateway_of(request)
    state = gw.state.state
    return {
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


@router.get("/metrics")
async def prometheus_metrics(request: Request) -> Response:
    return Response(gateway_of(request).prometheus.render(), media_type=CONTENT_TYPE_LATEST)
