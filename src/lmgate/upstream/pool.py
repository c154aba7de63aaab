"""Upstream connections: reused only while provably alive, and reset rather than closed.

A pooled keep-alive connection may have been closed by the upstream while it sat idle
(llama.cpp closes after every stream while announcing keep-alive). A request written on it
fails, and whether the upstream had read it first cannot be told afterwards, so a POST must
not be sent again. Instead the connection is checked before anything is written: an idle
HTTP/1.1 connection has nothing to read, so one that is readable (end of stream, reset, or
stray bytes) is dead and is dropped for another. One `poll` with no wait, well under a
microsecond.

A connection given up on (the client left, a timeout fired) is reset: `SO_LINGER` 0 and an
abort drop what is still queued, in the transport and in the kernel, at once. A polite close
would wait for a stalled upstream to read megabytes of request body first, keeping the socket
ESTABLISHED and the memory held for as long as the upstream likes.
"""

from __future__ import annotations

import asyncio
import inspect
import select
import socket
import struct
from contextlib import suppress

import aiohttp
from aiohttp.client_reqrep import ConnectionKey
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

_LINGER_NONE = struct.pack("ii", 1, 0)


def abort(transport: asyncio.Transport | None) -> None:
    """Reset the connection: nothing queued for it is sent, its socket closes now."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.fileno() >= 0:  # -1 once closed: never another's socket
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NONE)
    transport.abort()


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
    since 3.11; an older one gets its own connector, without the check)."""
    get = getattr(aiohttp.TCPConnector, "_get", None)
    return inspect.iscoroutinefunction(get) and "traces" in inspect.signature(get).parameters


class CheckedConnector(aiohttp.TCPConnector):
    """aiohttp's connector, handing out a pooled connection only if it is still open.

    `_get` is aiohttp's one place that takes a connection from the pool, for every request."""

    async def _get(self, key: ConnectionKey, traces: list[Trace]) -> Connection | None:
        while (conn := await super()._get(key, traces)) is not None:
            if _idle_and_open(conn.transport):
                return conn
            abort(conn.transport)
            conn.close()
        return None


def connector(*, keepalive_timeout: float) -> aiohttp.TCPConnector:
    """The upstream's pool: no limit on connections, DNS answers kept for five minutes."""
    kind = CheckedConnector if _checkable() else aiohttp.TCPConnector
    return kind(limit=0, keepalive_timeout=keepalive_timeout, ttl_dns_cache=300)
