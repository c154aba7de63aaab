"""Limits on what a client may send: body size, body read time, body memory, JSON nesting depth.

`InputLimits` sits right after the guard, so a body is read only once its request is admitted:
a request the guard refuses is answered unread. A request that takes no body (GET, HEAD,
OPTIONS, TRACE, and anything sent to the public routes `/health` and `/dashboard/*`, which anyone
may reach) is handed on as if it had none, whatever it declares: its framing headers are taken
out, the app gets an empty body, and what the client sends of it is dropped as it comes, never
kept. In both cases what is left of the body when the answer is complete is thrown away by the
protocol, a little of it at most (`guard/protocol.py`). Every other body is read whole under a
size cap (413), a deadline (408: a client trickling bytes cannot hold a connection and a buffer
forever) and the process-wide body memory budget (`guard/budget.py`, 503), then handed on as one
message. Doing it here covers the control plane too, whose framework would turn a failing read
into a vague 400.

The head of a request (line and headers) is limited earlier, in the HTTP protocol itself
(`guard/protocol.py`), because by the time an ASGI app runs the headers are already in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from lmgate.asgi import ASGIApp, Message, Receive, Scope, Send
from lmgate.errors import (
    BadRequest,
    GatewayError,
    PayloadTooLarge,
    RequestTimeout,
    send_error,
)
from lmgate.exchange import Exchange, exchange_of
from lmgate.guard.budget import BodyBudget, Hold
from lmgate.guard.paths import PUBLIC_PATHS, PUBLIC_PREFIXES, required_scope
from lmgate.guard.paths import Scope as KeyScope
from lmgate.hooks import ProxyRequest, ResponseTap

# Methods whose requests carry no content that lmgate (or LM Studio) would read.
BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_FRAMING = (b"content-length", b"transfer-encoding")
_NO_BODY: Message = {"type": "http.request", "body": b"", "more_body": False}


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length" and value.strip().strip(b"0"):
            return True
    return False


def _without_body(scope: Scope, receive: Receive) -> Receive:
    """The request as if it had no body: no framing headers, an empty body, and after that
    only the disconnect (what arrives of the body meanwhile is dropped, chunk by chunk)."""
    scope["headers"] = [h for h in scope["headers"] if h[0] not in _FRAMING]
    given = False

    async def receive_nothing() -> Message:
        nonlocal given
        if not given:
            given = True
            return dict(_NO_BODY)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message

    return receive_nothing


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.strip()
            return int(text) if text.isdigit() else None
    return None


class InputLimits:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout: float,
        budget: BodyBudget | None = None,
        health_public: bool = True,
    ) -> None:
        self.app = app
        self.timeout = body_timeout
        self.budget = budget if budget is not None else BodyBudget(8 * max_body_bytes)
        # A body larger than the whole budget could never be read: refused as too large (413)
        # rather than as a wait (503) that would never end.
        self.max_body = min(max_body_bytes, self.budget.limit)
        self.health_public = health_public
        # What `required_scope` could call public, tested in C first (this runs per body).
        self._public_paths = frozenset([*PUBLIC_PATHS, *(["/health"] if health_public else [])])
        self._public_prefixes = PUBLIC_PREFIXES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        if not self._takes_body(scope):
            await self.app(scope, _without_body(scope, receive), send)
            return
        with self.budget.hold() as hold:
            try:
                # The body as one message, handed on once and then let go (not kept for as
                # long as the answer takes).
                pending = [await self._read_within_limits(scope, receive, hold)]
            except GatewayError as exc:
                exchange_of(scope).error = exc.message
                exc.headers["Connection"] = "close"  # what is left of the body is not a request
                await send_error(send, exc)
                return

            async def replay() -> Message:
                if pending:
                    return pending.pop()
                return await receive()

            await self.app(scope, replay, send)

    def _takes_body(self, scope: Scope) -> bool:
        if scope["method"] in BODILESS_METHODS:
            return False
        lower: str = scope["path"].lower()
        if lower in self._public_paths:
            return False
        if not lower.startswith(self._public_prefixes):
            return True
        return required_scope(lower, health_public=self.health_public) is not KeyScope.PUBLIC

    async def _read_within_limits(self, scope: Scope, receive: Receive, hold: Hold) -> Message:
        declared = _declared_length(scope)
        if declared is not None:
            if declared > self.max_body:
                raise PayloadTooLarge(f"request body is larger than {self.max_body} bytes")
            hold.grow_to(declared)  # all of it, before a byte is read
        try:
            async with asyncio.timeout(self.timeout):
                return await self._read(receive, hold)
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {self.timeout:g} seconds"
            ) from None

    async def _read(self, receive: Receive, hold: Hold) -> Message:
        """The whole body as one `http.request` message, or the disconnect that cut it."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLarge(f"request body is larger than {self.max_body} bytes")
            hold.grow_to(size)  # a chunked body: reserved as it comes
            chunks.append(chunk)
            if not message.get("more_body", False):
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                return {"type": "http.request", "body": body, "more_body": False}


def json_depth(value: object, limit: int) -> int:
    """Nesting depth of a parsed JSON value, counting stops once past `limit`."""
    deepest = 0
    if not isinstance(value, dict | list):
        return 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        children = node.values() if isinstance(node, dict) else node
        assert isinstance(children, Iterable)
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return deepest


class JsonDepthLimit:
    """A proxy hook refusing inference bodies nested deeper than `limit` (400)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        raw = request.raw
        if raw.count(b"{") + raw.count(b"[") <= self.limit:
            return None  # every level opens a bracket: it cannot be deeper than that (C-fast)
        if request.body is not None and json_depth(request.body, self.limit) > self.limit:
            raise BadRequest(
                f"request body is nested deeper than {self.limit} levels", code="json_too_deep"
            )
        return None
