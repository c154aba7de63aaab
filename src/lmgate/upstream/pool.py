"""Upstream connections: reused only while provably alive, and reset rather than closed.

A pooled keep-alive connection may have been closed by the upstream while it sat idle. A
request written on it fails, and whether the upstream had read it first cannot be told
afterwards, so a POST is not sent again (`client.py`). So connections are checked before
anything is written on them: an idle HTTP/1.1 connection has nothing to read, and one that
is readable (end of stream, reset, or stray bytes) is dead and is dropped for another. One
`poll` with no wait, well under a microsecond.

That is not enough for llama.cpp's server, which closes its connection after every streamed
answer while announcing keep-alive, a moment after the stream's end: a request sent at once
can cross its close, and back to back, about one in twelve did. So the pool learns what the
upstream does with a connection after a stream. Until it knows, a request that must not be
sent twice waits, before taking such a connection, until `SETTLE_S` after the stream ended,
and checks it then. Found closed (within `CLOSED_SOON_S`): the upstream closes after
streams, and from then on such connections are reset as the stream ends, never pooled. Found
open `TRUSTED_AFTER` times: it keeps them, and they are reused at once (LM Studio).

A connection given up on (the client left, a timeout fired) is closed at once (`hang_up`),
and reset (`SO_LINGER` 0) when bytes are still queued for the upstream, in the transport or
in the kernel. A polite close would wait for a stalled upstream to read megabytes of request
body first, keeping the socket ESTABLISHED and the memory held as long as the upstream likes.
"""

from __future__ import annotations

import asyncio
import fcntl
import inspect
import select
import socket
import struct
import termios
import time
import weakref
from contextlib import suppress
from contextvars import ContextVar

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest, ConnectionKey
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

SETTLE_S = 0.02
CLOSED_SOON_S = 1.0
TRUSTED_AFTER = 3
# RFC 9110's idempotent methods: sending one of these twice does no harm (aiohttp itself
# repeats them once on a connection that failed).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

_LINGER_NONE = struct.pack("ii", 1, 0)
_ONCE_ONLY: ContextVar[bool] = ContextVar("lmgate_once_only", default=False)


def hang_up(transport: asyncio.Transport | None) -> None:
    """Close the connection now, whatever is still queued for it. Bytes still on their way
    to the upstream (in the transport's buffer, or sent but not acknowledged) are dropped with
    a reset (`SO_LINGER` 0), which a stalled upstream cannot hold up; with nothing queued the
    close is the ordinary one, which the upstream sees as its client gone (a half-closed
    connection is how some servers notice that a plain request was abandoned)."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.fileno() >= 0:  # -1 once closed: never another's socket
        if transport.get_write_buffer_size() or _unacknowledged(sock.fileno()):
            with suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NONE)
    transport.abort()


def _unacknowledged(fd: int) -> bool:
    """Whether the kernel still holds bytes the upstream has not acknowledged (Linux's
    SIOCOUTQ; where it cannot tell, assume it does)."""
    request = getattr(termios, "TIOCOUTQ", None)
    if request is None:
        return True
    try:
        return bool(int.from_bytes(fcntl.ioctl(fd, request, b"\0\0\0\0"), "little"))
    except OSError:
        return True


def _idle_and_open(transport: asyncio.Transport | None) -> bool:
    if transport is None or transport.is_closing():
        return False
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return not poller.poll(0)


def _checkable() -> bool:
    """Whether aiohttp takes pooled connections the way `CheckedConnector` expects (it has
    since 3.11; an older one gets its own connector, without the checks)."""
    get = getattr(aiohttp.TCPConnector, "_get", None)
    return inspect.iscoroutinefunction(get) and "traces" in inspect.signature(get).parameters


class CheckedConnector(aiohttp.TCPConnector):
    """aiohttp's connector, handing out a pooled connection only if it is still open.

    `_get` is aiohttp's one place that takes a connection from the pool, `_release` the one
    that puts it back, for every request."""

    def __init__(self, *, limit: int, keepalive_timeout: float, ttl_dns_cache: int) -> None:
        super().__init__(
            limit=limit, keepalive_timeout=keepalive_timeout, ttl_dns_cache=ttl_dns_cache
        )
        self.after_streams = "unknown"  # what the upstream does: "kept" or "closed"
        self._seen_open = 0
        self._streaming: weakref.WeakSet[ResponseHandler] = weakref.WeakSet()
        # pooled connections whose last answer was a stream, and when they came back
        self._after_stream: weakref.WeakKeyDictionary[ResponseHandler, float] = (
            weakref.WeakKeyDictionary()
        )

    async def connect(  # aiohttp's signature
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109
    ) -> Connection:
        if self.after_streams != "unknown":
            conn = await super().connect(req, traces, timeout)
        else:  # `_get` may have to wait before it hands out a connection for this request
            once_only = _ONCE_ONLY.set(req.method not in IDEMPOTENT)
            try:
                conn = await super().connect(req, traces, timeout)
            finally:
                _ONCE_ONLY.reset(once_only)
        if getattr(req.body, "streaming", False) and conn.protocol is not None:
            self._streaming.add(conn.protocol)
        return conn

    async def _get(self, key: ConnectionKey, traces: list[Trace]) -> Connection | None:
        while (conn := await super()._get(key, traces)) is not None:
            protocol = conn.protocol
            ended = (
                self._after_stream.pop(protocol, None)
                if self._after_stream and protocol is not None
                else None
            )
            learning = ended is not None and self.after_streams == "unknown" and _ONCE_ONLY.get()
            if learning:
                assert ended is not None
                try:
                    await asyncio.sleep(ended + SETTLE_S - time.monotonic())
                except BaseException:
                    conn.close()
                    raise
            if _idle_and_open(conn.transport):
                if learning:
                    self._seen_open += 1
                    if self._seen_open >= TRUSTED_AFTER:
                        self.after_streams = "kept"
                return conn
            if ended is not None and time.monotonic() - ended < CLOSED_SOON_S:
                self.after_streams = "closed"
            hang_up(conn.transport)
            conn.close()
        return None

    def _release(
        self, key: ConnectionKey, protocol: ResponseHandler, *, should_close: bool = False
    ) -> None:
        if self._streaming and protocol in self._streaming:
            self._streaming.discard(protocol)
            if self.after_streams == "closed":
                should_close = True  # the upstream closes it anyway: never in the pool
            elif not should_close:
                self._after_stream[protocol] = time.monotonic()
        super()._release(key, protocol, should_close=should_close)


def connector(*, keepalive_timeout: float) -> aiohttp.TCPConnector:
    """The upstream's pool: no limit on connections, DNS answers kept for five minutes."""
    if _checkable():
        return CheckedConnector(limit=0, keepalive_timeout=keepalive_timeout, ttl_dns_cache=300)
    return aiohttp.TCPConnector(limit=0, keepalive_timeout=keepalive_timeout, ttl_dns_cache=300)
