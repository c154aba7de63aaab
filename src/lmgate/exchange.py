"""One record per request, opened by the outermost middleware and finished exactly once.

Every layer below writes what it learns (key name, model, status, streaming) onto the
`Exchange`; observers (log line, metrics, events) read it at start and at finish. This keeps
the proxy free of logging and metrics code.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from lmgate.asgi import ASGIApp, Message, Receive, Scope, Send
from lmgate.errors import GatewayError, send_error
from lmgate.guard.paths import shown_path

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
SHOWN_CHARS = 256  # of a client's string, in a record, a log line, an event or a message


def clip(text: str, limit: int = SHOWN_CHARS) -> str:
    """A client-chosen string as records and messages show it: a path or a name may be as long
    as the head limit allows (64 KiB), and every log line, event and listed request that
    carried it whole would multiply that. The start stays (prefix checks still read it)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text)} chars)"


log = structlog.get_logger("lmgate")


@dataclass(slots=True)
class Exchange:
    request_id: str
    method: str
    path: str
    client: str | None
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)
    key_name: str | None = None
    endpoint: str | None = None  # inference kind, e.g. "chat"; None for other routes
    model: str | None = None
    status: int = 0
    streamed: bool = False
    error: str | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None  # first generated token of a stream, from the request's start
    tokens_in: int | None = None  # from the upstream's `usage`, when it reports one
    tokens_out: int | None = None
    tokens_streamed: int = 0  # output frames relayed so far (about one per token), live
    # tokens_out was counted from relayed frames: the upstream reported no usage (a stream
    # cancelled or cut off before its usage chunk, or an upstream that never sends one)
    tokens_estimated: bool = False
    cancelled: str | None = None  # why an operator cancelled it (`DELETE /debug/requests/ID`)
    attributes: dict[str, Any] = field(default_factory=dict)
    # Set by `finish`, for the observers: whether the request failed, and when tokens_out is
    # known the time the output took to generate (after the first token for streams, all of
    # it otherwise) and its tokens per second.
    failed: bool = False
    decode_s: float | None = None
    tokens_per_second: float | None = None

    def finish(self, latency_ms: float) -> None:
        """The request is over: what every observer reads of its outcome is worked out once
        here rather than by each of them."""
        self.latency_ms = latency_ms
        self.failed = self.status >= 400 or self.status == 0 or self.error is not None
        tokens = self.tokens_out
        if tokens is None or latency_ms <= 0:
            return
        ttft = self.ttft_ms
        start = ttft if ttft is not None and ttft < latency_ms else 0.0
        self.decode_s = seconds = (latency_ms - start) / 1000.0
        if seconds and tokens:
            self.tokens_per_second = int(tokens / seconds * 100.0 + 0.5) / 100.0  # 2 places


class Observer(Protocol):
    """A hook on the exchange lifecycle; must never block or raise."""

    def on_start(self, exchange: Exchange) -> None: ...

    def on_finish(self, exchange: Exchange) -> None: ...


def exchange_of(scope: Scope) -> Exchange:
    ex: Exchange = scope["lmgate.exchange"]
    return ex


def _request_id(headers: Sequence[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _REQUEST_ID.match(text):
                return text
            break
    return os.urandom(16).hex()  # 128 random bits, as a uuid4's hex but cheaper


class ExchangeMiddleware:
    """Opens the Exchange, stamps `X-Request-ID`, turns stray errors into JSON, then finishes."""

    def __init__(self, app: ASGIApp, observers: Sequence[Observer]) -> None:
        self.app = app
        self.observers = tuple(observers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        shown = shown_path(scope["path"])
        # A pairing request never keeps the client's id: it could carry the code itself.
        headers = scope["headers"] if shown == scope["path"] else ()
        ex = Exchange(
            request_id=_request_id(headers),
            method=scope["method"],
            path=clip(shown),
            client=client[0] if client else None,
        )
        scope["lmgate.exchange"] = ex
        rid_header = (b"x-request-id", ex.request_id.encode())
        started = False

        async def send_stamped(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                ex.status = message["status"]
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        for observer in self.observers:
            observer.on_start(ex)
        try:
            await self.app(scope, receive, send_stamped)
        except GatewayError as exc:
            ex.error = exc.message
            if not started:
                await send_error(send_stamped, exc)
        except Exception as exc:
            ex.error = f"{type(exc).__name__}: {exc}"
            log.exception("unhandled_error", request_id=ex.request_id, path=ex.path)
            if not started:
                await send_error(send_stamped, GatewayError("internal gateway error"))
        finally:
            ex.finish((time.perf_counter() - ex.started) * 1000.0)
            for observer in self.observers:
                observer.on_finish(ex)
