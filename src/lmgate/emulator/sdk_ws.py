"""LM Studio's SDK websocket protocol, on the same port as HTTP (reference §11).

The SDK opens one websocket per namespace (`/llm`, `/embedding`, `/system`, `/files`,
`/repository`…). Its first frame authenticates: `{authVersion: 1, clientIdentifier,
clientPasskey}`. An LM Studio API token `sk-lm-<8>:<20>` is sent as its two halves
(identifier, passkey), so with a token configured only that pair is let in; the reply is
`{"success": true}` or `{"success": false, "error": {...}}` and then the socket closes.

After that, frames are multiplexed: `rpcCall` → `rpcResult`/`rpcError` by `callId`, and
`channelCreate` opens a channel (by `channelId`) that streams `channelSend` messages and ends
with `channelClose` or `channelError`; the client may `channelSend {"type": "cancel"}`.
Errors carry LM Studio's shape `{title, cause?, suggestion?, displayData?}`. A frame it
cannot place is answered with a `communicationWarning`, as LM Studio does.

What each endpoint does lives in `sdk_endpoints`; this module only speaks the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from lmgate.emulator.state import EmulatorState

NAMESPACES = ("llm", "embedding", "system", "files", "repository", "diagnostics", "plugins")
_TOKEN_HALF = re.compile(r"^[A-Za-z0-9]{8}$")
MAX_OPEN_CHANNELS = 64  # per socket; more is a misbehaving client


class SdkError(Exception):
    """A failure reported to the SDK in LM Studio's error shape."""

    def __init__(
        self,
        title: str,
        *,
        cause: str | None = None,
        suggestion: str | None = None,
        display: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(title)
        self.title = title
        self.cause = cause
        self.suggestion = suggestion
        self.display = display

    def payload(self) -> dict[str, Any]:
        error: dict[str, Any] = {"title": self.title}
        if self.cause is not None:
            error["cause"] = self.cause
        if self.suggestion is not None:
            error["suggestion"] = self.suggestion
        if self.display is not None:
            error["displayData"] = self.display
        return error


class Cancelled(Exception):
    """The client sent `cancel` on the channel."""


@dataclass
class Call:
    """What an RPC or channel handler sees: the emulator and the namespace it was called on."""

    state: EmulatorState
    namespace: str


@dataclass
class Channel(Call):
    """An open channel: send messages to the client, and wait while watching for `cancel`."""

    send: Callable[[dict[str, Any]], Awaitable[None]] = field(repr=False)
    inbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue, repr=False)

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds`, raising `Cancelled` as soon as the client cancels."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, seconds)
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return
            try:
                message = await asyncio.wait_for(self.inbox.get(), left)
            except TimeoutError:
                return
            if isinstance(message, dict) and message.get("type") == "cancel":
                raise Cancelled


RpcHandler = Callable[[Call, Any], Awaitable[Any]]
ChannelHandler = Callable[[Channel, Any], Awaitable[None]]


@dataclass
class Endpoints:
    """The RPC and channel endpoints served on each namespace."""

    rpc: dict[str, dict[str, RpcHandler]] = field(default_factory=dict)
    channels: dict[str, dict[str, ChannelHandler]] = field(default_factory=dict)


def auth_refusal(message: Any, token: str | None) -> dict[str, Any] | None:
    """The handshake's error, or None when it is accepted.

    Without a token any well-formed handshake is a guest. With one, the identifier and
    passkey must be the token's two halves (compared in constant time)."""
    if not isinstance(message, dict) or message.get("authVersion") != 1:
        return SdkError(
            "Unsupported authentication packet",
            cause="The first message must be {authVersion: 1, clientIdentifier, clientPasskey}",
        ).payload()
    identifier, passkey = message.get("clientIdentifier"), message.get("clientPasskey")
    if not isinstance(identifier, str) or not isinstance(passkey, str):
        return SdkError(
            "Unsupported authentication packet",
            cause="clientIdentifier and clientPasskey must be strings",
        ).payload()
    if token is None:
        return None
    presented = f"sk-lm-{identifier}:{passkey}".encode()
    if hmac.compare_digest(presented, token.encode()):
        return None
    if not _TOKEN_HALF.match(identifier):
        return SdkError(
            "An LM Studio API token is required to connect to this server",
            suggestion="Pass an API token created in LM Studio's Developer settings.",
        ).payload()
    return SdkError("Invalid API token").payload()


class Session:
    """One client websocket on one namespace."""

    def __init__(self, websocket: WebSocket, namespace: str, endpoints: Endpoints) -> None:
        self.ws = websocket
        self.state = cast(EmulatorState, websocket.app.state.emulator)
        self.namespace = namespace
        self.rpc = endpoints.rpc.get(namespace, {})
        self.channel_handlers = endpoints.channels.get(namespace, {})
        self.channels: dict[int, Channel] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.send_lock = asyncio.Lock()

    async def serve(self) -> None:
        await self.ws.accept()
        try:
            if await self._handshake():
                while True:
                    message = await self.ws.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    await self._dispatch(message.get("text") or message.get("bytes") or b"")
        except WebSocketDisconnect:
            pass
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def send(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            if self.ws.application_state is WebSocketState.CONNECTED:
                await self.ws.send_text(orjson.dumps(message).decode())

    async def _handshake(self) -> bool:
        first = await self.ws.receive()
        if first["type"] == "websocket.disconnect":
            return False
        raw = first.get("text") or first.get("bytes") or b""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            message = None
        refusal = auth_refusal(message, self.state.config.api_token)
        if refusal is None:
            await self.send({"success": True})
            return True
        await self.send({"success": False, "error": refusal})
        await self.ws.close()
        return False

    async def warn(self, warning: str) -> None:
        await self.send({"type": "communicationWarning", "warning": warning})

    async def _dispatch(self, raw: str | bytes) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            await self.warn("Received invalid JSON")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "rpcCall" and isinstance(message.get("callId"), int):
            await self._rpc(message)
        elif kind == "channelCreate" and isinstance(message.get("channelId"), int):
            await self._open(message)
        elif kind == "channelSend" and isinstance(message.get("channelId"), int):
            channel = self.channels.get(message["channelId"])
            if channel is None:
                await self.warn(f"Received channelSend for unknown channel {message['channelId']}")
            else:
                channel.inbox.put_nowait(message.get("message"))
        else:
            await self.warn(f"Received unknown message type, type = {kind}")

    async def _rpc(self, message: dict[str, Any]) -> None:
        call_id, endpoint = message["callId"], message.get("endpoint")
        handler = self.rpc.get(endpoint) if isinstance(endpoint, str) else None
        if handler is None:
            await self.warn(f"Received rpcCall for unknown endpoint, endpoint = {endpoint}")
            return
        try:
            result = await handler(Call(self.state, self.namespace), message.get("parameter"))
        except SdkError as exc:
            await self.send({"type": "rpcError", "callId": call_id, "error": exc.payload()})
            return
        except Exception as exc:  # a parameter the handler could not read
            error = SdkError(f"Error in RPC handler: {type(exc).__name__}").payload()
            await self.send({"type": "rpcError", "callId": call_id, "error": error})
            return
        reply: dict[str, Any] = {"type": "rpcResult", "callId": call_id}
        if result is not None:
            reply["result"] = result
        await self.send(reply)

    async def _open(self, message: dict[str, Any]) -> None:
        channel_id, endpoint = message["channelId"], message.get("endpoint")
        handler = self.channel_handlers.get(endpoint) if isinstance(endpoint, str) else None
        if handler is None:
            await self.warn(f"Received channelCreate for unknown endpoint, endpoint = {endpoint}")
            return
        if channel_id in self.channels or len(self.channels) >= MAX_OPEN_CHANNELS:
            error = SdkError(f"Cannot open channel {channel_id}").payload()
            await self.send({"type": "channelError", "channelId": channel_id, "error": error})
            return

        async def send(inner: dict[str, Any]) -> None:
            await self.send({"type": "channelSend", "channelId": channel_id, "message": inner})

        channel = Channel(self.state, self.namespace, send)
        self.channels[channel_id] = channel
        task = asyncio.create_task(self._run(channel_id, channel, handler, message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(
        self, channel_id: int, channel: Channel, handler: ChannelHandler, message: dict[str, Any]
    ) -> None:
        ending: dict[str, Any] = {"type": "channelClose", "channelId": channel_id}
        try:
            await handler(channel, message.get("creationParameter"))
        except SdkError as exc:
            ending = {"type": "channelError", "channelId": channel_id, "error": exc.payload()}
        except Cancelled:
            error = SdkError("Operation cancelled", cause="The client cancelled it.").payload()
            ending = {"type": "channelError", "channelId": channel_id, "error": error}
        except Exception as exc:  # a creation parameter the handler could not read
            error = SdkError(f"Error in channel handler: {type(exc).__name__}").payload()
            ending = {"type": "channelError", "channelId": channel_id, "error": error}
        finally:
            self.channels.pop(channel_id, None)
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self.send(ending)


def endpoint_for(namespace: str, endpoints: Endpoints) -> Callable[[WebSocket], Awaitable[None]]:
    async def serve(websocket: WebSocket) -> None:
        await Session(websocket, namespace, endpoints).serve()

    return serve
