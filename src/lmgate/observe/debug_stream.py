"""`GET /debug/stream`: the event bus as Server-Sent Events.

Query: `types=a,b,model_*` (names or prefix globs), `model=KEY`. A reconnecting client sends
`Last-Event-ID` (EventSource does so by itself; `lastEventId=` in the query works too).
Events are sent in batches (whatever came within `LMGATE_DEBUG_STREAM_BATCH_MS` of the
first goes out as one write; 50 ms, which a human watching does not notice and the proxy's
core does) and every frame is encoded once for all subscribers, so many open dashboards cost
the proxy little. A client that fell behind gets an `events_lost` event with the number it
missed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from sse_starlette import EventSourceResponse, ServerSentEvent

from lmgate import params
from lmgate.gateway import gateway_of
from lmgate.observe.events import sse_frame

router = APIRouter(tags=["monitoring"])


def _resume_id(request: Request, query_value: str | None) -> int | None:
    header = request.headers.get("last-event-id")
    if header:
        return params.event_id(header, "Last-Event-ID")
    return params.event_id(query_value, "lastEventId")


def _lost(count: int) -> bytes:
    return sse_frame("events_lost", {"type": "events_lost", "count": count})


@router.get("/debug/stream")
async def debug_stream(
    request: Request,
    types: str | None = None,
    model: str | None = None,
    lastEventId: str | None = None,  # the name EventSource users know
) -> EventSourceResponse:
    gw = gateway_of(request)
    bus = gw.bus
    wanted = params.patterns(types, "types")
    model = params.text(model, "model")
    sub = bus.subscribe(types=wanted, model=model, after_id=_resume_id(request, lastEventId))
    linger = gw.settings.debug_stream_batch_ms / 1000.0

    async def frames() -> AsyncIterator[bytes]:
        try:
            hello = {
                "type": "connected",
                "activeModel": gw.state.state.active_model,
                "lastEventId": bus.last_id,
                "batchMs": gw.settings.debug_stream_batch_ms,
            }
            yield sse_frame("connected", hello)
            while True:
                batch, lost = await sub.take(linger)
                frames = bus.encode(batch)
                yield _lost(lost) + frames if lost else frames
        finally:
            bus.unsubscribe(sub)

    return EventSourceResponse(
        frames(),
        ping=gw.settings.keepalive_seconds,
        ping_message_factory=lambda: ServerSentEvent(comment="keep-alive", sep="\n"),
        sep="\n",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
