"""A request body on its way upstream: written in slices, within a time limit, abortable.

aiohttp writes a bytes body in one go, joined to the request head first (a full copy of the
body on Python before 3.12.9), and the transport keeps whatever the upstream has not read
yet: a stalled upstream held two copies of every body it never read. Here a large body is
written a slice at a time, each slice a copy of 64 KiB made as it goes, the next one once
the transport has drained below its limit: what waits for the upstream is the one body the
gateway already holds plus a slice or two. Copies rather than views of the body, because a
view would keep all of it alive for as long as anything keeps the view: the transport's
buffer, or the frames in a failure's traceback, which asyncio's reference cycles hold until
a garbage collection, and collections are rare here (`serving.GC_THRESHOLDS`).

The upstream gets `limit` seconds to take the whole body; a write that is still blocked then
fails with `TimeoutError`, which the client maps to a 504. The transport the body went to is
remembered, so whoever gives up on the request can reset that very connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from lmgate.upstream.pool import hang_up

SLICE = 64 * 1024  # also aiohttp's drain threshold: a body this small never waits to be sent


class Upload(Payload):
    _autoclose = True  # bytes in memory: nothing to close

    def __init__(self, body: bytes, limit: float | None, *, streaming: bool) -> None:
        super().__init__(body, content_type=None)
        self._size = len(body)
        self.limit = limit
        self.streaming = streaming  # the answer asked for is a stream (`pool` wants to know)
        self.transport: asyncio.Transport | None = None
        self.timed_out = False

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        value: bytes = self._value
        return value.decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        value: bytes = self._value
        return value

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        body: bytes = self._value
        self.transport = transport = _transport_of(writer)
        if content_length is not None and content_length < len(body):
            body = body[:content_length]
        if len(body) <= SLICE:
            await writer.write(body)  # below aiohttp's drain threshold: this never waits
            if transport is None or not transport.get_write_buffer_size():
                return  # all of it in the kernel's hands: the usual case, with no timer
            body = b""  # the upstream is slow to take even this: wait for it, within the limit
        try:
            async with asyncio.timeout(self.limit):
                for start in range(0, len(body), SLICE):
                    await writer.write(body[start : start + SLICE])
                await writer.drain()  # what aiohttp's end of message would wait for, unlimited
        except TimeoutError:
            self.timed_out = True
            raise
        finally:
            del body  # a failure's traceback keeps this frame: it must not keep the body too

    def abort(self) -> None:
        """Give up: reset the connection the body went to, if it went anywhere, and let go of
        the body, which whatever still refers to this payload (a failure's traceback) would
        otherwise keep."""
        hang_up(self.transport)
        self._value = b""


def _transport_of(writer: Any) -> asyncio.Transport | None:
    transport: asyncio.Transport | None = getattr(writer, "transport", None)
    return transport
