"""uvicorn's httptools protocol with the limits it lacks, all enforced before any ASGI code runs.

- **Who connects.** `connection_made` asks the `ConnectionGate` (`guard/connections.py`): a peer
  no allowlist could admit gets 403, an address already holding its share of connections 429,
  both as raw JSON answers and a close, before a byte is parsed.
- **Head bytes.** The request line and headers are counted as bytes arrive, not as the parser
  reports them: httptools hands a header over only once its line ends, and until then keeps
  growing it, so an endless header line would otherwise never be counted. While a head is being
  read, at most the bytes left of `max_head_bytes` are fed to the parser; a head that has not
  ended by then gets 431 and a closed connection. The parser thus holds at most the limit for
  one head, plus what followed a previous request in the same read (a pipelined head that
  begins inside a chunk is counted from the next chunk on).
- **Malformed requests** get 400 as the same JSON error as everything else, and a close.
- **Head time.** A connection that has not finished a request's head within `head_timeout`
  seconds of its first byte (or of connecting) is closed, with 408 when part of a head had
  arrived (slowloris).
- **Unread bodies.** When an answer is complete before its request's body was read (the guard
  refused it, or a route took no body), what the client sends next is the rest of that body,
  which uvicorn parses and throws away. Clients commonly send a small body right behind the
  head, so up to `MAX_DISCARDED` bytes of it are thrown away within `head_timeout` and the
  connection kept alive for the next request (closing it would fail a client that reuses it at
  once); a body declared larger, or one that does not end within those bytes and that time,
  closes the connection.
- **Pipelining.** A client may queue at most `MAX_PIPELINED` requests behind the one being
  answered (each holds its head and scope, and one read can carry thousands): those are
  answered, then the connection is closed, and nothing after them is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lmgate.errors import BadRequest, GatewayError, HeadersTooLarge, RequestTimeout
from lmgate.guard.connections import ConnectionGate, connection_gate
from lmgate.settings import Settings

MAX_PIPELINED = 32
MAX_DISCARDED = 64 * 1024


class _Stop(Exception):
    """Raised from a parser callback to stop parsing what is left of a read."""


def _declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """The request's `Content-Length`; a chunked body (none declared) counts as 0."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def _raw_response(error: GatewayError) -> bytes:
    body = error.body()
    extra = "".join(f"{name.lower()}: {value}\r\n" for name, value in error.headers.items())
    head = (
        f"HTTP/1.1 {error.status} {error.code.replace('_', ' ')}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        f"{extra}connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


class GuardedHttpProtocol(HttpToolsProtocol):
    # Slots, not instance attributes: uvicorn's own already fill an instance dict's shared
    # keys nearly to Python's limit (30), and past it every connection's dict would be a
    # private table five times the size (about 1.3 KiB more per open connection).
    __slots__ = (
        "_began",
        "_counted",
        "_discarded",
        "_head_bytes",
        "_head_open",
        "_head_started",
        "_head_timer",
        "_in_head",
        "_refused",
    )
    max_head_bytes = 64 * 1024
    head_timeout = 10.0
    gate: ConnectionGate | None = None

    @classmethod
    def configure(cls, settings: Settings) -> None:
        """Take the limits from `settings` (uvicorn makes the instances; they read the class)."""
        cls.max_head_bytes = settings.max_header_bytes
        cls.head_timeout = settings.header_timeout
        cls.gate = connection_gate(settings)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # bytes fed to the parser for the head being read
        self._head_open = True  # the next bytes fed belong to a head (or start one)
        self._in_head = False  # a head has begun and not ended
        self._head_started = 0.0  # loop time the current head (or the connection) began
        self._began = False  # a request has begun on this connection
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._counted: str | None = None  # this connection's unit in the gate's counts
        self._discarded = -1  # bytes received of an unread body being thrown away; -1: none

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        gate = self.gate
        if gate is not None:
            try:
                self._counted = gate.enter(self.client[0] if self.client else None)
            except GatewayError as exc:
                self._refuse(exc)
                return
        self._head_started = self.loop.time()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted is not None and self.gate is not None:
            self.gate.leave(self._counted)
            self._counted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        if not self._head_open:
            self._feed(data)
            if self._discarded >= 0:  # still throwing away an unread body
                self._discarded += len(data)
                if self._discarded > MAX_DISCARDED:
                    self._close()
        elif len(data) <= self.max_head_bytes - self._head_bytes:
            self._head_bytes += len(data)
            self._feed(data)
        else:
            self._feed_bounded(memoryview(data))

    def _feed_bounded(self, view: memoryview) -> None:
        """More bytes than the head being read may still take: feed them a head's room at a
        time, and refuse the request whose head fills its room without ending."""
        limit = self.max_head_bytes
        while view and not self._refused:
            if not self._head_open:  # the rest starts with a body
                self._feed(view)
                return
            room = limit - self._head_bytes
            piece, view = view[:room], view[room:]
            self._head_bytes += len(piece)
            self._feed(piece)
            if view and self._head_open and self._head_bytes >= limit and not self._refused:
                self._refuse(HeadersTooLarge(f"request line and headers exceed {limit} bytes"))

    def _feed(self, data: bytes | memoryview) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no protocol upgrades here: the request is served as plain HTTP/1.1
        except httptools.HttpParserError:
            if not self._refused:  # (a callback of ours may have closed the connection)
                self._refuse(BadRequest("invalid HTTP request", code="invalid_http_request"))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._began = True
        self._head_started = self.loop.time()
        self._arm()

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._in_head = False  # the timer, if still armed, sees this and lets the head be
        super().on_headers_complete()
        if len(self.pipeline) > MAX_PIPELINED:
            self._cut_pipeline()

    def _cut_pipeline(self) -> None:
        """Too many requests queued: the newest is dropped, the ones before it are answered,
        the connection closes after the last of them, and nothing more is read from it."""
        self.pipeline.popleft()  # uvicorn queues on the left, starts from the right
        last = self.pipeline[0][0]
        last.keep_alive = False
        self.cycle = last
        self._refused = True
        raise _Stop  # the rest of this read is not parsed

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open = True
        self._head_bytes = 0
        self._discarded = -1

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle.response_complete and cycle.more_body and not self.transport.is_closing():
            # Answered before its body was read: the rest of that body comes next.
            if _declared_length(cycle.scope["headers"]) > MAX_DISCARDED:
                self.server_state.total_requests += 1
                self._close()
                return
            self._discarded = 0
            self._head_started = self.loop.time()  # the head timer bounds the discarding
            self._arm()
        super().on_response_complete()

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
        if self._in_head or self._discarded >= 0:
            if self.loop.time() < self._head_started + self.head_timeout:
                self._arm()  # a later head than the one the timer was set for
                return
            if self._discarded >= 0:  # the unread body did not end in time
                self._close()
            else:
                self._refuse(RequestTimeout("the request head did not arrive in time"))
        elif not self._began:  # connected, and not a byte of a request since
            self._close()

    def _refuse(self, error: GatewayError) -> None:
        self.transport.write(_raw_response(error))
        self._close()

    def _close(self) -> None:
        """Close the connection; whatever else arrives on it is ignored."""
        self._refused = True
        self._disarm()
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedHttpProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`, with the limits of `settings`."""
    protocol: type[GuardedHttpProtocol] = type("GuardedHttpProtocol", (GuardedHttpProtocol,), {})
    protocol.configure(settings)
    return protocol
