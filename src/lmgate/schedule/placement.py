"""Which upstream a request goes to, and which models make room for a load.

Admission: an upstream where the model is loaded with a free slot (heavier upstream first, then
the one with most free slots). Loads: the upstream whose plan evicts least, drains nothing if it
can, then weight. Victims: never pinned, never a model someone else loaded (unless
`manage_all`), idle before busy, the active model last, least recently used first. Busy victims
are only ever *drained*: the load waits until they are idle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from lmgate.schedule.types import ModelPolicy, Request
from lmgate.schedule.upstreams import Resident, UpstreamState

PolicyOf = Callable[[str], ModelPolicy | None]


@dataclass(frozen=True, slots=True)
class RoomPlan:
    evict: tuple[str, ...]  # idle victims: unload now, then load
    drain: tuple[str, ...]  # busy victims: hold their new requests until idle

    @property
    def ready(self) -> bool:
        return not self.drain


def pick_admission(
    request: Request,
    ups: Iterable[UpstreamState],
    policies: Mapping[str, ModelPolicy],
    default_slots: int,
) -> UpstreamState | None:
    """Each upstream is asked about its own key for the request's model (`Request.key_on`)."""
    best: UpstreamState | None = None
    best_score = (0.0, 0)
    keys, name = request.keys, request.model
    for up in ups:
        model = name if keys is None else keys.get(up.name, name)
        resident = up.residents.get(model)
        if resident is None:
            if up.spec.can_load or not up.has_room_for_more():
                continue
            free = up.slots_for(policies.get(model), None, default_slots)
        elif up.admissible(model) is None:
            continue
        else:
            free = resident.slots - resident.in_flight
        score = (up.spec.weight, free)
        if best is None or score > best_score:
            best, best_score = up, score
    return best


def fits_alone(up: UpstreamState, size: int) -> bool:
    """Could the model ever fit here, with everything else gone?"""
    budget = up.spec.memory_budget
    limit = up.spec.max_loaded_models
    return (budget is None or size <= budget) and (limit is None or limit >= 1)


def plan_room(
    up: UpstreamState,
    model: str,
    size: int,
    *,
    policy_of: PolicyOf,
    active: str | None,
    manage_all: bool,
    now: float,
) -> RoomPlan | None:
    """The victims that make room for `model` on `up`, or None if no allowed set does."""
    limit, budget = up.spec.max_loaded_models, up.spec.memory_budget
    loading_size = 0
    if up.loading is not None and up.loading not in up.residents:
        loading_size = up.size_of(up.loading, policy_of(up.loading))
    count_over = up.count() + 1 - limit if limit is not None else 0
    bytes_over = up.bytes_used(loading_size) + size - budget if budget is not None else 0
    if count_over <= 0 and bytes_over <= 0:
        return RoomPlan((), ())

    def allowed(r: Resident) -> bool:
        if r.model == model or not (r.owned or manage_all):
            return False
        policy = policy_of(r.model)
        if policy is not None and policy.pinned:
            return False
        return not (r.in_flight and up.cooling.get(r.model, 0.0) > now)

    candidates = sorted(
        (r for r in up.residents.values() if allowed(r)),
        key=lambda r: (r.in_flight > 0, r.model == active, r.last_used, r.model),
    )
    chosen: list[Resident] = []
    for resident in candidates:
        if count_over <= 0 and bytes_over <= 0:
            break
        chosen.append(resident)
        count_over -= 1
        bytes_over -= resident.size
    if count_over > 0 or bytes_over > 0:
        return None
    return RoomPlan(
        tuple(r.model for r in chosen if not r.in_flight),
        tuple(r.model for r in chosen if r.in_flight),
    )


def plan_cost(up: UpstreamState, plan: RoomPlan) -> tuple[int, int, float, str]:
    """Lower is better: drain nothing, evict least, prefer heavier upstreams."""
    return (len(plan.drain), len(plan.evict), -up.spec.weight, up.name)
