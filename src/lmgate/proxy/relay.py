"""The transparent proxy: read the body, inject, relay the answer as it arrives.

A stream has one owner: the `async with upstream.open(...)` block. When the client goes away,
a watcher cancels this task, the block exits, the upstream socket closes, and LM Studio stops
generating. Bytes are sent on as they come; nothing here buffers or coalesces chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson

from lmgate.asgi import Receive, Scope, Send
from lmgate.classify import is_proxied as is_proxied  # the app's dispatch asks it here
from lmgate.classify import route_of
from lmgate.errors import BadRequest, GatewayError, PayloadTooLarge
from lmgate.exchange import Exchange, exchange_of
from lmgate.guard.paths import quote_path
from lmgate.heap import LARGE_BODY, release_soon
from lmgate.hooks import ProxyHook, ProxyRequest, ResponseTap
from lmgate.observe.inference_events import InferenceEvents
from lmgate.observe.requests import INTERRUPTED, RequestCancelled
from lmgate.pipeline.injection import INJECTED, inject
from lmgate.proxy.early import (
    STREAMING,
    EarlyStart,
    error_event,
    is_event_stream_answer,
    refusal_of,
    refuse,
)
from lmgate.proxy.headers import request_headers, response_headers
from lmgate.store.state import StateStore
from lmgate.upstream.client import UpstreamClient, UpstreamResponse
from lmgate.upstreams.merged import MergedAnswer
from lmgate.upstreams.routing import ROUTE, Router

_COPY_BELOW = 64 * 1024
Answer = UpstreamResponse | MergedAnswer  # an upstream's, or the merged model list


class ClientGone(Exception):
    """The client hung up before it finished sending its request."""


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(parsed, dict):
        raise BadRequest("request body must be a JSON object", code="invalid_json")
    return parsed


def _encoded(body: dict[str, Any] | None) -> bytes:
    """The edited body for the upstream. orjson hands back its bytes in the buffer it wrote
    them into, 4 KiB at least whatever their length; for a small body the copy, of the exact
    length, is what waits (with a thousand others) for the upstream to answer. A large one
    fills its buffer: it is sent as it is, not copied again."""
    encoded = orjson.dumps(body)
    return memoryview(encoded).tobytes() if len(encoded) < _COPY_BELOW else encoded


def _outgoing(request: ProxyRequest) -> bytes | None:
    """The body for the upstream, taken out of the request: from here it exists once, held
    by the upstream client alone (no frame here keeps it while the answer is awaited, or in a
    failure's traceback). The client's bytes are let go before an edited body is encoded, the
    parsed body once it is."""
    if request.changed:
        request.raw = b""
        body = _encoded(request.body)
    else:
        body, request.raw = request.raw, b""
    request.body = None
    return body or None


def _request(scope: Scope, body: bytes) -> ProxyRequest:
    """The request as classified once (`lmgate.classify`): canonical path, inference kind."""
    route = route_of(scope)
    method: str = scope["method"]
    return ProxyRequest(scope, method, route.path, route.kind(method), None, raw=body)


def _pending(request: ProxyRequest | None) -> EarlyStart | None:
    """The answer started early for `request`, while none of the upstream's was sent."""
    early = request.early if request is not None else None
    return early if isinstance(early, EarlyStart) and early.pending else None


class _Taps:
    """Several taps fed and ended as one, each in turn (their `start` ran already)."""

    def __init__(self, taps: list[ResponseTap]) -> None:
        self.taps = taps

    def feed(self, chunk: bytes) -> bytes:
        for tap in self.taps:
            chunk = tap.feed(chunk)
        return chunk

    def end(self) -> bytes:
        return b"".join([tap.end() for tap in self.taps])


class ProxyApp:
    def __init__(
        self,
        upstream: UpstreamClient,
        state: StateStore,
        events: InferenceEvents,
        *,
        max_body_bytes: int,
        forward_credentials: bool,
        hooks: Sequence[ProxyHook] = (),
        router: Router | None = None,
    ) -> None:
        self.upstream = upstream
        self.router = router  # several upstreams: picks each request's; None: `upstream`
        self.state = state
        self.events = events
        self.max_body = max_body_bytes
        self.forward_credentials = forward_credentials
        self.hooks = tuple(hooks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = exchange_of(scope)
        current = asyncio.current_task()
        assert current is not None
        disconnected = False
        watcher: asyncio.Task[None] | None = None

        async def watch() -> None:
            nonlocal disconnected
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected = True
            current.cancel()

        large = False
        request: ProxyRequest | None = None
        try:
            request = _request(scope, await read_body(scope, receive, self.max_body))
            large = len(request.raw) >= LARGE_BODY
            if large:
                release_soon()  # the heap's share of receiving it, while the answer is awaited
            watcher = asyncio.create_task(watch())
            await self._forward(ex, request, send)
        except ClientGone:
            ex.error, ex.status = "client disconnected", 499
        except asyncio.CancelledError:
            if ex.cancelled is not None:
                current.uncancel()
                await self._cancelled(ex, request, send)
                return
            if not disconnected and watcher is not None:
                raise
            current.uncancel()
            ex.error = "client disconnected"
            if ex.status == 0 or _pending(request) is not None:
                ex.status = 499  # gone before any answer (an early start's comments are none)
        finally:
            if watcher is not None:
                watcher.cancel()
            if large:
                release_soon()  # and what sending it left

    async def _forward(self, ex: Exchange, request: ProxyRequest, send: Send) -> None:
        scope, kind = request.scope, request.kind
        taps: list[ResponseTap] = []
        early: EarlyStart | None = None
        if kind is not None:
            self._parse(ex, request, kind)
            if ex.streamed and kind in STREAMING:  # a hook that makes it wait may start it
                request.early = early = EarlyStart(send, taps)
        try:
            for hook in self.hooks:
                tap = await hook.before_forward(ex, request)
                if tap is not None:
                    taps.append(tap)
            if kind is not None:
                self.events.started(ex)
            router = self.router
            upstream = self.upstream if router is None else router.client_for(ex, request)
            target = quote_path(request.path)  # after routing: an alias's path names the key
            if scope["query_string"]:
                target += "?" + scope["query_string"].decode("latin-1")
            attempts = None if router is None else router.attempts
            if attempts is not None and ROUTE in ex.attributes:  # admitted on one of several

                def headers_for(client: UpstreamClient) -> list[tuple[str, str]]:
                    return request_headers(
                        scope["headers"],
                        auth_header=client.auth_header,
                        forward_credentials=self.forward_credentials,
                    )

                opened: AbstractAsyncContextManager[Answer] = attempts.open(
                    ex, request, target, _outgoing(request), headers_for=headers_for
                )
            else:
                headers = request_headers(
                    scope["headers"],
                    auth_header=upstream.auth_header,
                    forward_credentials=self.forward_credentials,
                )
                opened = upstream.open(
                    request.method, target, headers, _outgoing(request), streaming=ex.streamed
                )
                # The request is sent once opened. An answer can take minutes; its headers
                # need not stay in memory all that time (the body was the upstream client's).
                del headers
            async with opened as resp:
                if early is not None and early.started:
                    await self._relay_started(ex, resp, taps, early)
                    return
                if not ex.streamed:
                    ex.streamed = resp.event_stream
                out_headers = response_headers(resp.headers)
                for tap in taps:
                    out_headers = tap.start(resp.status, out_headers)
                await send(
                    {"type": "http.response.start", "status": resp.status, "headers": out_headers}
                )
                del out_headers  # sent
                if taps:
                    await self._relay_tapped(ex, resp, taps, send)
                else:
                    await self._relay(ex, resp, send)
        except GatewayError as exc:
            if early is None or not early.pending:
                raise
            await refuse(ex, early, exc)  # refused while queued, or the upstream unreachable

    async def _relay_started(
        self, ex: Exchange, resp: Answer, taps: list[ResponseTap], early: EarlyStart
    ) -> None:
        """The answer started while the request waited: the upstream's events follow on it
        (its status line and headers have nowhere to go but the taps that came after the
        start). Anything but a 2xx event stream is told as an error event."""
        later = taps[early.tapped :]
        headers = response_headers(resp.headers)
        for tap in later:
            headers = tap.start(resp.status, headers)
        if is_event_stream_answer(resp):
            early.upstream = True
            if taps:
                await self._relay_tapped(ex, resp, taps, early.send)
            else:
                await self._relay(ex, resp, early.send)
            return
        reader = None if not later else later[0] if len(later) == 1 else _Taps(later)
        try:
            error = await refusal_of(resp, None if reader is None else reader.feed)
        except GatewayError as exc:
            error = exc
        finally:
            if reader is not None:
                reader.end()
        await refuse(ex, early, error, status=resp.status)

    def _parse(self, ex: Exchange, request: ProxyRequest, kind: str) -> None:
        """An inference body: parsed, injected, and what the exchange records of it."""
        ex.endpoint = kind
        request.body = obj = parse_object(request.raw)
        added: dict[str, Any] = {}
        request.changed = inject(obj, kind, self.state.injection, added)
        if added:
            ex.attributes[INJECTED] = added
        model = obj.get("model")
        ex.model = model if isinstance(model, str) else None
        ex.streamed = obj.get("stream") is True

    async def _relay(self, ex: Exchange, resp: Answer, send: Send) -> None:
        try:
            async for chunk in resp.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except GatewayError as exc:
            await self._broken(ex, exc, send)
            return
        await send({"type": "http.response.body", "body": b""})

    async def _relay_tapped(
        self, ex: Exchange, resp: Answer, taps: list[ResponseTap], send: Send
    ) -> None:
        """As `_relay`, with every chunk shown to the taps; each tap's `end` runs exactly once."""
        tap = taps[0] if len(taps) == 1 else _Taps(taps)  # usually one: usage accounting
        try:
            async for chunk in resp.chunks():
                chunk = tap.feed(chunk)
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except GatewayError as exc:
            tap.end()
            await self._broken(ex, exc, send)
            return
        except BaseException:  # cancelled: the client left, or an operator cancelled it
            tap.end()
            raise
        await send({"type": "http.response.body", "body": tap.end()})

    async def _cancelled(self, ex: Exchange, request: ProxyRequest | None, send: Send) -> None:
        """An operator cancelled the request (`DELETE /debug/requests/ID`), or the gateway is
        stopping (`INTERRUPTED`); the upstream response is closed already. Tell the client in
        the answer's own terms. An interrupted request is recorded with the error's status
        even when the client's status line said 200: it did not succeed."""
        interrupted = ex.attributes.get(INTERRUPTED)
        error = (
            interrupted
            if isinstance(interrupted, GatewayError)
            else RequestCancelled(ex.cancelled or "cancelled")
        )
        if ex.status == 0:
            raise error
        early = _pending(request)
        if early is not None:
            await refuse(ex, early, error)
            return
        await self._broken(ex, error, send)
        if interrupted is not None:
            ex.status = error.status

    async def _broken(self, ex: Exchange, exc: GatewayError, send: Send) -> None:
        """The upstream broke mid-answer. A stream can say so; a plain body is cut short."""
        ex.error = exc.message
        if ex.streamed:
            await send({"type": "http.response.body", "body": error_event(ex.endpoint, exc)})
