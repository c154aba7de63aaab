"""uvicorn's httptools protocol with two limits it lacks: head size, and time to send the head.

Without them a client can send endless header bytes (the server keeps them all in memory) or
open connections and send nothing or a byte at a time (slowloris) until file descriptors run
out. Here the request line and headers are counted as the parser reports them, and a request
over `max_head_bytes` gets 431 and a closed connection; a connection that has not finished a
request's head within `head_timeout` seconds of its first byte (or of connecting) is closed,
with 408 when part of a head had arrived.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lmgate.errors import GatewayError, HeadersTooLarge, RequestTimeout


class _HeadTooLarge(Exception):
    pass


def _raw_response(error: GatewayError) -> bytes:
    body = error.body()
    head = (
        f"HTTP/1.1 {error.status} {error.code.replace('_', ' ')}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class GuardedHttpProtocol(HttpToolsProtocol):
    # Slots, not instance attributes: uvicorn's own already fill an instance dict's shared
    # keys nearly to Python's limit (30), and past it every connection's dict would be a
    # private table five times the size (about 1.3 KiB more per open connection).
    __slots__ = (
        "_began",
        "_head_bytes",
        "_head_started",
        "_head_timer",
        "_in_head",
        "_refused",
    )
    max_head_bytes = 64 * 1024
    head_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = False
        self._head_started = 0.0  # loop time the current head (or the connection) began
        self._began = False  # a request has begun on this connection
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_started = self.loop.time()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol upgrades here: the request is served as plain HTTP/1.1
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                limit = self.max_head_bytes
                self._refuse(HeadersTooLarge(f"request line and headers exceed {limit} bytes"))
            else:
                self.send_400_response("Invalid HTTP request received.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._in_head = self._began = True
        self._head_started = self.loop.time()
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.max_head_bytes:
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False  # the timer, if still armed, sees this and lets the head be
        super().on_headers_complete()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            raise _HeadTooLarge

    def _arm(self) -> None:
        """One timer per connection rather than one per request: when it fires it checks the
        head under way then, and re-arms itself for that head's own deadline if need be."""
        if self._head_timer is None:
            deadline = self._head_started + self.head_timeout
            self._head_timer = self.loop.call_at(deadline, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._in_head:
            if self.loop.time() < self._head_started + self.head_timeout:
                self._arm()  # a later head than the one the timer was set for
                return
            self._refuse(RequestTimeout("the request head did not arrive in time"))
        elif not self._began:  # connected, and not a byte of a request since
            self._refused = True
            self.transport.close()

    def _refuse(self, error: GatewayError) -> None:
        self._refused = True
        self._disarm()
        self.transport.write(_raw_response(error))
        self.transport.close()


def guarded_protocol(*, max_head_bytes: int, head_timeout: float) -> type[GuardedHttpProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`, with these limits."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {"max_head_bytes": max_head_bytes, "head_timeout": head_timeout},
    )
