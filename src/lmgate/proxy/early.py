"""A streaming answer started before the upstream's: while its request waits in the queue.

The hook that holds the request sends the start (200, `text/event-stream`) and comment lines
through `EarlyStart`; the relay then carries on with the upstream's events on the same answer.
From that moment a status line can no longer say what went wrong, so a refusal (queue
timeout, a failed load, the upstream's own error or an answer that is not an event stream)
becomes one error event in the framing the endpoint's SDK raises on, and the answer ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import orjson

from lmgate.asgi import Send
from lmgate.errors import GatewayError, UpstreamError
from lmgate.exchange import Exchange
from lmgate.hooks import ResponseTap
from lmgate.upstream.client import (
    UpstreamRefused,
    error_reason,
    is_event_stream,
)

# Endpoints that answer `"stream": true` with an event stream (embeddings ignore the flag).
STREAMING = frozenset(("chat", "completions", "responses", "messages", "native_chat"))
ERROR_BODY_LIMIT = 64 * 1024  # of an upstream's refusal, read to say what it was
IN_STREAM = " (sent in the event stream: the answer had started while the request waited)"

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


class EarlyStart:
    """The relay's side of `lmgate.hooks.EarlyAnswer`. The taps that ran before the start
    (the rate headers') see its headers; the ones after it see the upstream's, as usual.
    `upstream` turns true once the upstream's answer is being relayed."""

    __slots__ = ("send", "started", "tapped", "taps", "upstream")

    def __init__(self, send: Send, taps: list[ResponseTap]) -> None:
        self.send = send
        self.taps = taps  # the relay's list, filled as the hooks run
        self.started = False
        self.upstream = False
        self.tapped = 0

    @property
    def pending(self) -> bool:
        """Started, and nothing of the upstream's sent yet."""
        return self.started and not self.upstream

    async def start(self, headers: list[tuple[bytes, bytes]]) -> None:
        out = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), *headers]
        for tap in self.taps:
            out = tap.start(200, out)
        self.tapped = len(self.taps)
        self.started = True
        await self.send({"type": "http.response.start", "status": 200, "headers": out})

    async def write(self, chunk: bytes) -> None:
        await self.send({"type": "http.response.body", "body": chunk, "more_body": True})


def _anthropic_type(error: GatewayError) -> str:
    return _ANTHROPIC_TYPES.get(error.status, "api_error")


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def error_event(endpoint: str | None, error: GatewayError, *, first: bool = False) -> bytes:
    """`error` as the endpoint's SSE error event. `first`: nothing preceded it (a Responses
    event then carries its `sequence_number`, 0).

    OpenAI-compatible routes: `data: {"error": {...}}` (the openai SDK raises `APIError` on
    any frame with an `error` key). `/v1/messages`: Anthropic's `error` event. `/v1/responses`:
    its `error` event, with the `error` object too, so the openai SDK raises on it.
    `/api/v1/chat`: LM Studio's `error` event."""
    if endpoint == "messages":
        detail = {"type": _anthropic_type(error), "message": error.message}
        return _event(b"error", {"type": "error", "error": detail})
    if endpoint == "responses":
        payload: dict[str, Any] = {
            "type": "error",
            "code": error.code,
            "message": error.message,
            "param": error.param,
        }
        if first:
            payload["sequence_number"] = 0
        payload["error"] = {"message": error.message, "type": error.type, "code": error.code}
        return _event(b"error", payload)
    if endpoint == "native_chat":
        detail = {"type": error.type, "message": error.message, "code": error.code}
        return _event(b"error", {"type": "error", "error": detail})
    return b"data: " + error.body() + b"\n\n"


class Answer(Protocol):
    """An answer as the relay reads it: an upstream's, or one lmgate put together."""

    status: int
    headers: list[tuple[bytes, bytes]]

    def chunks(self) -> AsyncIterator[bytes]: ...


def is_event_stream_answer(resp: Answer) -> bool:
    return 200 <= resp.status < 300 and is_event_stream(resp.headers)


async def refusal_of(resp: Answer, feed: Callable[[bytes], bytes] | None) -> GatewayError:
    """What an upstream answer that cannot continue an event stream said, read (at most
    `ERROR_BODY_LIMIT` bytes) and shown to the taps (`feed`) as it would have been relayed."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.chunks():
        if feed is not None:
            feed(chunk)
        chunks.append(chunk)
        size += len(chunk)
        if size >= ERROR_BODY_LIMIT:
            break
    body: Any = None
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        pass
    reason = error_reason(body)
    if not 200 <= resp.status < 300 or reason is not None:  # or LM Studio's "200 with an error"
        return UpstreamRefused(resp.status, reason or f"HTTP {resp.status}", body)
    media = next((v for k, v in resp.headers if k == b"content-type"), b"none")
    return UpstreamError(
        "the upstream answered a streaming request with no event stream "
        f"(content type {media.decode('latin-1')[:64]})",
        code="upstream_not_streaming",
    )


async def refuse(ex: Exchange, early: EarlyStart, error: GatewayError, *, status: int = 0) -> None:
    """Refused after the answer started early: one error event ends it. The exchange records
    the refusal's status (the upstream's own, when it refused) all the same, and the taps
    that saw the start are ended."""
    early.upstream = True  # the answer is the error's now
    ex.status = status or error.status
    ex.error = error.message + IN_STREAM
    for tap in early.taps[: early.tapped]:
        tap.end()
    body = error_event(ex.endpoint, error, first=True)
    await early.send({"type": "http.response.body", "body": body})
