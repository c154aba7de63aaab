"""What waiting requests need loaded: demands per model and the upstreams they may use.

Requests that can never be served that way are refused here: a model larger than every
candidate's budget, a load that failed moments ago, a key that may not cause loads (unless
another key's request causes the same load), a key past its loads per hour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from lmgate.schedule.fairness import Waiting
from lmgate.schedule.placement import fits_alone
from lmgate.schedule.types import (
    LOAD_DENIED,
    LOAD_FAILED,
    LOAD_LIMIT,
    MODEL_TOO_LARGE,
    STATUS,
    Action,
    ModelPolicy,
    Reject,
    Request,
)
from lmgate.schedule.upstreams import UpstreamState

if TYPE_CHECKING:
    from lmgate.schedule.core import Scheduler

Group = tuple[str, frozenset[str] | None]  # (model, the upstreams its requests may use)


@dataclass(slots=True)
class Demand:
    """A model that waiting requests need loaded, and the upstreams that may load it."""

    model: str
    first: Waiting  # first request (fair order) whose key may cause the load: it is charged
    since: float  # the longest any request has been kept from this model (see `kept_since`)
    ups: dict[str, UpstreamState] = field(default_factory=dict)
    starved: bool = False

    def key_on(self, upstream: str) -> str:
        """The model's key on `upstream` (an alias may name another on each)."""
        return self.first.request.key_on(upstream)


def reject(request_id: str, code: str, message: str, retry_after: float | None = None) -> Reject:
    return Reject(request_id, STATUS[code], code, message, retry_after)


def kept_since(s: Scheduler, w: Waiting) -> float:
    """When the request started waiting *for its model*: its arrival, or, for a request held
    while its model drained, the moment the model was evicted. So a model just switched in
    serves its queue for `switch_max_wait` before the models it displaced may take it back."""
    req = w.request
    since = s.evicted.get(req.model, w.arrival)
    if req.keys is not None:
        since = max([since, *(s.evicted.get(k, w.arrival) for k in req.keys.values())])
    return max(w.arrival, since)


def collect(s: Scheduler, now: float, actions: list[Action]) -> dict[Group, Demand]:
    """Models that waiting requests need loaded, grouped by the upstreams they may use;
    requests that can never be served that way are refused here."""
    demands: dict[Group, Demand] = {}
    refused: list[Reject] = []
    everywhere = s.candidates_any()
    for model, waiting in s.queue.by_model.items():
        here_anywhere = any(up.serves(model) for up in everywhere)
        if here_anywhere and model not in s.queue.restricted:
            continue  # the common case, decided once per model: they wait for a slot
        served: dict[frozenset[str] | None, bool] = {None: here_anywhere}
        blocked: list[tuple[Waiting, Reject]] = []
        for w in waiting:
            req = w.request
            ups = s.candidates(req)
            if req.keys is not None:  # an alias: each upstream's own key
                here: bool | None = any(up.serves(req.key_on(up.name)) for up in ups)
            elif (here := served.get(req.upstreams)) is None:
                here = served[req.upstreams] = any(up.serves(model) for up in ups)
            if here:
                continue
            viable, refusal = _loaders(req, ups, s.policies, now)
            if refusal is not None:
                refused.append(refusal)
                continue
            allowed, again = s.load_history.allows(req, now)
            if not allowed:
                blocked.append((w, _no_load(req.id, model, req.may_load, again)))
                continue
            since = kept_since(s, w)
            demand = demands.get((model, req.upstreams))
            if demand is None:
                ups_by_name = {up.name: up for up in viable}
                demands[model, req.upstreams] = Demand(model, w, since, ups_by_name)
            else:
                demand.since = min(demand.since, since)
        for w, refusal in blocked:  # they may ride on a load another key's request causes
            group = demands.get((model, w.request.upstreams)) or next(
                (d for (m, _), d in demands.items() if m == model), None
            )
            if group is None:
                refused.append(refusal)
            else:
                group.since = min(group.since, kept_since(s, w))
    for r in refused:
        s.queue.remove(r.request_id)
        actions.append(r)
    cap = s.config.switch_max_wait
    for demand in demands.values():
        demand.starved = now - demand.since >= cap
    return demands


def refusal(s: Scheduler, request: Request, now: float) -> Reject | None:
    """The refusal `collect` would give a newcomer that cannot start now, found before it may
    take another key's place in a full queue."""
    model = request.model
    ups = s.candidates(request)
    if any(up.serves(request.key_on(up.name)) for up in ups):
        return None
    _, refused = _loaders(request, ups, s.policies, now)
    if refused is not None:
        return refused
    allowed, again = s.load_history.allows(request, now)
    if allowed or any(
        s.load_history.allows(w.request, now)[0] for w in s.queue.by_model.get(model, ())
    ):
        return None
    return _no_load(request.id, model, request.may_load, again)


def _loaders(
    req: Request,
    ups: tuple[UpstreamState, ...],
    policies: Mapping[str, ModelPolicy],
    now: float,
) -> tuple[list[UpstreamState], Reject | None]:
    """The candidates that may load the model (each its own key), or why none may."""
    viable: list[UpstreamState] = []
    refused: Reject | None = None
    for up in ups:
        model = req.key_on(up.name)
        size = up.size_of(model, policies.get(model))
        if model in up.unloading:
            viable.append(up)  # loadable again once the unload is done
        elif not fits_alone(up, size):
            refused = refused or reject(
                req.id, MODEL_TOO_LARGE, f"{model} needs {size} bytes, beyond the budget"
            )
        elif (failed := _failure(up, model, now)) is not None:
            refused = replace(failed, request_id=req.id)
        else:
            viable.append(up)
    if viable:
        return viable, None
    return viable, refused or reject(req.id, MODEL_TOO_LARGE, f"{req.model} cannot be loaded")


def _no_load(request_id: str, model: str, may_load: bool, again: float) -> Reject:
    if not may_load:
        return reject(
            request_id,
            LOAD_DENIED,
            f"{model} is not loaded and this key may not load models; use a loaded model",
        )
    return reject(
        request_id,
        LOAD_LIMIT,
        f"{model} is not loaded and this key has used its model loads for this hour",
        max(1.0, math.ceil(again)),
    )


def _failure(up: UpstreamState, model: str, now: float) -> Reject | None:
    entry = up.backoff(model, now)
    if entry is None:
        return None
    message = f"loading {model} failed moments ago: {entry[1]}"
    return Reject("", STATUS[LOAD_FAILED], LOAD_FAILED, message, entry[0] - now)
