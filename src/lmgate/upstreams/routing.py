"""Where a request goes when there are several upstreams.

An inference request names a model: the scheduler admits it on one of the upstreams that may
take it (`candidates`: listed, allowed, up and not draining; those where it is loaded when
there are any), placing it by its rules (a free slot, heavier upstream first; else queued;
else loaded where it fits), and the relay forwards it to that upstream's client
(`Router`). A model list is answered from every upstream at once (`merged`); a model's own
path goes to an upstream that lists it; anything else goes to the primary.
"""

from __future__ import annotations

from lmgate.classify import classify
from lmgate.errors import NotFound
from lmgate.exchange import Exchange, clip
from lmgate.hooks import ProxyRequest
from lmgate.upstream.client import UpstreamClient
from lmgate.upstreams.members import Upstreams
from lmgate.upstreams.merged import MergedListing

ROUTE = "lmgate.upstream"  # the upstream a request was admitted on (`Exchange.attributes`)


class ModelNotAvailable(NotFound):
    code = "model_not_found"


def candidates(upstreams: Upstreams, model: str) -> tuple[str, frozenset[str]]:
    """The model's key and the upstreams that may take a request for it now; a 404 that says
    where it exists but may not be used, or is not available, when none may."""
    offering = upstreams.offering(model)
    if offering:
        # Where it is loaded, if anywhere (the scheduler then admits on a free slot or queues
        # for the shortest wait); else wherever it may be loaded (JIT, or the core's load
        # placement: fewest evictions, memory budget, weight).
        loaded = [(m, key) for m, key in offering if m.loaded(key)]
        chosen = loaded or offering
        return chosen[0][1], frozenset(m.name for m, _ in chosen)
    denied, away = [], []
    for member in upstreams:
        found = member.watcher.find(model)
        if found is None:
            continue
        if not member.config.allows(found.key):
            denied.append(member.name)
        else:
            away.append(f"{member.name} ({'draining' if member.draining else 'down'})")
    shown = clip(model)
    if denied or away:
        parts = []
        if denied:
            parts.append(f"not allowed on {', '.join(denied)}")
        if away:
            parts.append(f"not available on {', '.join(away)}")
        raise ModelNotAvailable(f"model '{shown}' is {'; '.join(parts)}")
    raise ModelNotAvailable(f"no upstream offers model '{shown}'")


class Router:
    """Picks the client (or the merged listing) one proxied request is sent to."""

    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams

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
