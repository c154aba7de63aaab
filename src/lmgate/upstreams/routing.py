"""Where a request goes when there are several upstreams.

An inference request names a model: the scheduler admits it on one of the upstreams that may
take it (`candidates`: listed, allowed, up and not draining; those where it is loaded when
there are any), placing it by its rules (a free slot, heavier upstream first; else queued;
else loaded where it fits), and the relay forwards it to that upstream's client
(`Router`). A gateway-level alias may name a different key on each upstream: the scheduler
is told each upstream's key (`placed_by`), and the body sent names the chosen one's (`spell`,
and `respell` for a retry elsewhere). A model list is answered from every upstream at once
(`merged`); a model's own path goes to an upstream that lists it; anything else goes to the
primary.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import orjson

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


def candidates(upstreams: Upstreams, model: str, exclude: str | None = None) -> dict[str, str]:
    """The upstreams that may take a request for `model` now (but `exclude`), each with the key
    it knows the model by (an alias may name a different key on each); a 404 that says where
    it exists but may not be used, or is not available, when none may."""
    offering = [(m, key) for m, key in upstreams.offering(model) if m.name != exclude]
    if offering:
        # Where it is loaded, if anywhere (the scheduler then admits on a free slot or queues
        # for the shortest wait); else wherever it may be loaded (JIT, or the core's load
        # placement: fewest evictions, memory budget, weight).
        loaded = [(m, key) for m, key in offering if m.loaded(key)]
        return {m.name: key for m, key in loaded or offering}
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


def placed_by(name: str, keys: Mapping[str, str]) -> tuple[str, dict[str, str] | None]:
    """What the scheduler places a request by: the one key, when every upstream knows the
    model by the same (as ever); else the gateway-level name with each upstream's own key."""
    values = iter(keys.values())
    first = next(values)
    if all(key == first for key in values):
        return first, None
    return name, dict(keys)


def spelled(upstreams: Upstreams, upstream: str, name: str) -> str:
    """The model a body sent to `upstream` names: its own key for a gateway-level alias, else
    the client's name unchanged."""
    member = upstreams.get(upstream)
    return name if member is None else member.config.key_of(name)


def spell(upstreams: Upstreams, name: str, upstream: str, request: ProxyRequest) -> None:
    """A gateway-level alias becomes the chosen upstream's own key in the body sent."""
    model = spelled(upstreams, upstream, name)
    if model != name and request.body is not None:
        request.body["model"] = model
        request.changed = True


def respell(body: bytes | None, model: str) -> bytes | None:
    """An encoded inference body naming `model` instead (a retry on an upstream that knows
    the alias by another key): parsed and encoded again, on that rare path only."""
    if body is None:
        return None
    parsed = orjson.loads(body)
    if not isinstance(parsed, dict):
        return body
    parsed["model"] = model
    return orjson.dumps(parsed)


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
                if offering:  # an alias: that upstream's own key in the path sent
                    member, key = offering[0]
                    request.path = route.path[: len(route.path) - len(route.model)] + key
                    return member.client
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
                    if ex.model is not None:  # an alias may be another key there
                        there = spelled(ups, other, ex.model)
                        if there != spelled(ups, name, ex.model):
                            body = respell(body, there)
                    name, upstream = other, ups.client_of(other)
            del body, headers
            if resp.status >= 500:
                ups.failed(name, f"HTTP {resp.status}")
            else:
                ups.answered(name)
            ups.sent(name, "ok" if resp.status < 500 else "error")
            yield resp
