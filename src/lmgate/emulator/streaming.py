"""Server-sent events: frame encoding, token pacing, and a disconnect-aware response.

The response is plain ASGI rather than Starlette's StreamingResponse because the emulator
must notice a client leaving while it is between tokens (not only on the next failed write)
and account for it, so gateway tests can assert that cancellation reached the upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from lmgate.emulator.state import EmulatorState

DONE_FRAME = b"data: [DONE]\n\n"


def data_frame(payload: Any) -> bytes:
    """An unnamed frame, as the OpenAI-compatible chat/completions streams use."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def event_frame(name: str, payload: Any) -> bytes:
    """A named frame (`event:` line first), as responses, messages and REST v1 chat use."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class FailMode(Enum):
    NONE = "none"
    MIDSTREAM = "mid-stream"
    DROP = "drop"


class MidStreamFailure(Exception):
    """Raised into a surface's frame generator so it can emit its own error frame."""


class StreamDropped(Exception):
    """Escapes the response on purpose: the server aborts the connection mid-body."""


@dataclass(frozen=True)
class Pacing:
    """Per-request timing and failure injection for a token stream."""

    token_delay: float
    fail: FailMode = FailMode.NONE


async def paced(pieces: Sequence[str], pacing: Pacing) -> AsyncIterator[str]:
    """Yield one piece per token delay; injected failures strike halfway through."""
    cut = len(pieces) // 2 if pacing.fail is not FailMode.NONE else len(pieces)
    for piece in pieces[:cut]:
        if pacing.token_delay > 0:
            await asyncio.sleep(pacing.token_delay)
        yield piece
    if pacing.fail is FailMode.MIDSTREAM:
        raise MidStreamFailure
    if pacing.fail is FailMode.DROP:
        raise StreamDropped


class EventStream(Response):
    """Streams frames with LM Studio's SSE headers and counts how each stream ended."""

    def __init__(self, frames: AsyncIterator[bytes], state: EmulatorState) -> None:
        self.frames = frames
        self.state = state
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            (b"connection", b"keep-alive"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        counters = self.state.streams  # a reset mid-stream must not skew the new counters
        counters.active += 1
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(_wait_for_disconnect(receive))
        finished = False
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
            if pump.done():
                finished = pump.exception() is None or isinstance(pump.exception(), StreamDropped)
                pump.result()
        except OSError:
            pass  # the client went away during a write
        finally:
            for task in (pump, watch):
                task.cancel()
            for task in (pump, watch):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            counters.active -= 1
            if finished:
                counters.completed += 1
            else:
                counters.cancelled += 1

    async def _pump(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        try:
            async for frame in self.frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        finally:
            await _close(self.frames)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _close(frames: AsyncIterator[bytes]) -> None:
    aclose = getattr(frames, "aclose", None)
    if aclose is not None:
        await aclose()
