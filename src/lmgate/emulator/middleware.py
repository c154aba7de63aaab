"""The pure-ASGI front door every request passes through before routing.

It reads the body once (requests are small JSON), records the request for the test hooks,
enforces the optional API token, turns unparseable JSON into LM Studio's 400, normalises a
trailing slash the way Express does, and stamps `X-Powered-By: Express` on every response.
Pure ASGI so streamed bodies pass through untouched and disconnects reach the handlers.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmgate.emulator.inference import BODY_SCOPE_KEY
from lmgate.emulator.quirks import OPEN_PATHS, auth_failure, json_parse_message
from lmgate.emulator.replies import json_response
from lmgate.emulator.state import EmulatorState
from lmgate.emulator.streaming import StreamDropped

HOOK_PREFIX = "/__emulator/"
GENERATING = frozenset(  # answers counted per model, for `/__emulator/stats`
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
        "/api/v0/chat/completions",
        "/api/v0/completions",
        "/api/v1/chat",
    }
)


class FrontDoor:
    """Wraps the Starlette app; holds the emulator state it records into."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        path: str = scope["path"]
        headers = _headers(scope)
        parsed, parse_error = _parse(raw)
        if not path.startswith(HOOK_PREFIX):
            self.state.record(
                {
                    "time": time.time(),
                    "method": scope["method"],
                    "path": path,
                    "query": scope.get("query_string", b"").decode("latin-1"),
                    "headers": headers,
                    "body": parsed,
                }
            )
        if len(path) > 1 and path.endswith("/"):
            scope["path"] = path = path.rstrip("/") or "/"
        started = False

        async def stamped_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                out = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in out):
                    out.append((b"connection", b"keep-alive"))
                message["headers"] = [*out, (b"x-powered-by", b"Express")]
            await send(message)

        token = self.state.config.api_token
        failure = None
        if token and path.lower() not in OPEN_PATHS and not path.startswith(HOOK_PREFIX):
            failure = auth_failure(headers, token)
        if failure is not None:
            await json_response(failure, status=401)(scope, receive, stamped_send)
            return
        if parse_error is not None:
            body = {"error": parse_error}
            await json_response(body, status=400)(scope, receive, stamped_send)
            return
        scope[BODY_SCOPE_KEY] = parsed
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        model = parsed.get("model") if isinstance(parsed, dict) else None
        if isinstance(model, str) and scope["method"] == "POST" and path in GENERATING:
            generation = self.state.catalog.generation(model)
            counted: contextlib.AbstractContextManager[Any] = generation
            inner_send = stamped_send

            async def stamped_send(message: Message) -> None:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    generation.end()
                await inner_send(message)
        else:
            counted = contextlib.nullcontext()
        try:
            with counted:
                await self.app(scope, replay, stamped_send)
        except StreamDropped:
            if not started:
                raise
            # Return without finishing the body: the server then aborts the connection.


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def _parse(raw: bytes) -> tuple[Any, str | None]:
    if not raw.strip():
        return None, None
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        return None, json_parse_message(raw, exc.pos)
