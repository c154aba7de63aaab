"""Where a request goes when there are several upstreams.

An inference request names a model: the scheduler admits it on one of the upstreams that may
take it (`candidates`: listed, allowed, up and not draining; those where it is loaded when
there are any), placing it by its rules (a free slot, heavier upstream first; else queued;
else loaded where it fits), and the relay forwards it to that upstream's client
(`Router`). A model list is answered from every upstream at once (`merged`); a model's own
path goes to an upstream that lists it; anything else goes to the primary.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp

from lmgate.classify import classify
from lmgate.errors import GatewayError, NotFound, UpstreamError
from lmgate.exchange import Exchange, clip
from lmgate.hooks import ProxyRequest
from lmgate.upstream.client import UpstreamClient, UpstreamResponse
from lmgate.upstreams.members import Upstreams
from lmgate.upstreams.merged import MergedListing

ROUTE = "lmgate.upstream"  # the upstream a request was admitted on (`Exchange.attributes`)


class ModelNotAvailable(NotFound):
    code = "model_not_found"


def candidates(
    upstreams: Upstreams, model: str, exclude: str | None = None, only_key: str | None = None
) -> tuple[str, frozenset[str]]:
    """The model's key and the upstreams that may take a request for it now (but `exclude`);
    a 404 that says where it exists but may not be used, or is not available, when none may."""
    offering = [(m, key) for m, key in upstreams.offering(model) if m.name != exclude]
    if only_key is not None:
        offering = [(m, key) for m, key in offering if key == only_key]
    if offering:
        # Where it is loaded, if anywhere (the scheduler then admits on a free slot or queues
        # for the shortest wait); else wherever it may be loaded (JIT, or the core's load
        # placement: fewest evictions, memory budget, weight). An alias may name different
        # keys on different upstreams: the scheduler places one key, the first found.
        loaded = [(m, key) for m, key in offering if m.loaded(key)]
        chosen = loaded or offering
        key = chosen[0][1]
        return key, frozenset(m.name for m, k in chosen if k == key)
    denied, away = [], []
    for member in upstreams:
        found = member.watcher.find(member.config.key_of(model))
        if found is None:
            continue
        if not member.config.allows(found.key):
            denied.append(member.name)
        else:
            state = (
                "draining" if member.draining else "failed" if member.name == exclude else "down"
            )
            away.append(f"{member.name} ({state})")
    shown = clip(model)
    if denied or away:
        parts = []
        if denied:
            parts.append(f"not allowed on {', '.join(denied)}")
        if away:
            parts.append(f"not available on {', '.join(away)}")
        raise ModelNotAvailable(f"model '{shown}' is {'; '.join(parts)}")
    raise ModelNotAvailable(f"no upstream offers model '{shown}'")


def spell(upstreams: Upstreams, name: str, where: frozenset[str], request: ProxyRequest) -> None:
    """A gateway-level alias becomes the chosen upstreams' own key in the body sent."""
    for member in upstreams:
        if member.name in where and name in member.config.aliases:
            if request.body is not None:
                request.body["model"] = member.config.aliases[name]
                request.changed = True
            return


class Router:
    """Picks the client (or the merged listing) one proxied request is sent to."""

    def __init__(self, upstreams: Upstreams, reroute: Reroute | None = None) -> None:
        self.upstreams = upstreams
        self.attempts = None if reroute is None else Attempts(upstreams, reroute)

    def client_for(self, ex: Exchange, request: ProxyRequest) -> UpstreamClient | MergedListing:
        if not self.upstreams.routed:  # one upstream, as ever
            return self.upstreams.primary.client
        chosen = ex.attributes.get(ROUTE)
        if isinstance(chosen, str):
            return self.upstreams.client_of(chosen)
        if request.kind is None and request.method in ("GET", "HEAD"):
            route = classify(request.path)
            if route.listing is not None:
                return MergedListing(self.upstreams, request.path, *route.listing)
            if route.model is not None:
                offering = self.upstreams.offering(route.model)
                if offering:
                    return offering[0][0].client
        return self.upstreams.primary.client


Reroute = Callable[[Exchange, ProxyRequest, str], Awaitable[str | None]]
HeadersFor = Callable[[UpstreamClient], list[tuple[str, str]]]  # the relay's, per upstream


def not_accepted(exc: GatewayError) -> bool:
    """The upstream never took the request: its connection was refused or not made in time,
    or the request never reached its server whole. A kernel resets a connection whose bytes
    its server never read (a server killed with connections it had not accepted yet), and a
    request that could not be written whole cannot have been acted on; a server that read the
    request and then died closes the connection instead. Anything else (a connection closed
    or lost after sending, a timeout) may have reached it."""
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return True
    if isinstance(cause, aiohttp.ClientConnectionResetError):  # closing before it was written
        return True
    return isinstance(cause, aiohttp.ClientOSError) and (
        cause.errno == errno.ECONNRESET  # reset before any answer
        or isinstance(cause.__cause__, ConnectionResetError | BrokenPipeError)  # body unwritten
    )


class Attempts:
    """Sends an admitted inference request, and once more elsewhere when its upstream did not
    accept it (`not_accepted`): the scheduler gives up its place there and admits it on
    another upstream that may take it (`reroute`). Every outcome feeds the upstream's breaker.
    The body is kept for the second try only until the first has been accepted."""

    def __init__(self, upstreams: Upstreams, reroute: Reroute) -> None:
        self.upstreams = upstreams
        self.reroute = reroute

    @asynccontextmanager
    async def open(
        self,
        ex: Exchange,
        request: ProxyRequest,
        target: str,
        body: bytes | None,
        *,
        headers_for: HeadersFor,
    ) -> AsyncIterator[UpstreamResponse]:
        ups = self.upstreams
        name = str(ex.attributes[ROUTE])
        upstream = ups.client_of(name)
        async with AsyncExitStack() as stack:
            for attempt in (1, 2):
                headers = headers_for(upstream)  # each upstream's own token, never another's
                opened = upstream.open(request.method, target, headers, body, streaming=ex.streamed)
                try:
                    resp = await stack.enter_async_context(opened)
                    break
                except UpstreamError as exc:
                    ups.failed(name, exc.message)
                    other = None
                    if attempt == 1 and not_accepted(exc):
                        other = await self.reroute(ex, request, name)
                    if other is None:
                        ups.sent(name, "error")
                        raise
                    ups.sent(name, "retried")
                    ups.retried(ex.model, name, other, exc.message)
                    name, upstream = other, ups.client_of(other)
            del body, headers
            if resp.status >= 500:
                ups.failed(name, f"HTTP {resp.status}")
            else:
                ups.answered(name)
            ups.sent(name, "ok" if resp.status < 500 else "error")
            yield resp
