"""Settling the core after an event: expire, admit, plan loads and drains, unload the idle.

Switch policy, in words: a load that fits (after evicting idle models only) starts as soon as
its upstream has no other load running. A load that needs a busy model gone waits while that
model keeps serving its own queue, which groups requests per model and cuts switches, until the
oldest request for the new model has waited `switch_max_wait` (from its arrival, or from its
model's eviction if it was held during a drain: see `demand.kept_since`). Then the busy victims
*drain*: their new requests are held, and the load starts once they are idle. A drain that
lasts `drain_max_wait` is given up (its held requests run again, the victim is not drained
again for as long), and the switch waits for a better moment. Nothing running is ever cut.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from lmgate.schedule.demand import collect, kept_since, reject
from lmgate.schedule.fairness import Waiting
from lmgate.schedule.placement import RoomPlan, pick_admission, plan_cost, plan_room
from lmgate.schedule.types import QUEUE_TIMEOUT, Action, Load, LoadRefused, Unload
from lmgate.schedule.upstreams import Switch, UpstreamState

if TYPE_CHECKING:
    from lmgate.schedule.core import Scheduler

__all__ = ["explicit_load", "next_deadline", "settle", "ttl_of"]


def settle(s: Scheduler, now: float) -> list[Action]:
    actions: list[Action] = []
    _expire(s, now, actions)
    _admit_all(s, now, actions)
    if _plan(s, now, actions):
        _admit_all(s, now, actions)
    _idle(s, now, actions)
    return actions


def _expire(s: Scheduler, now: float, actions: list[Action]) -> None:
    timeout = s.config.queue_timeout
    while (oldest := s.queue.oldest()) is not None and now - oldest.arrival >= timeout:
        s.queue.remove(oldest.request.id)
        actions.append(
            reject(
                oldest.request.id,
                QUEUE_TIMEOUT,
                f"waited {timeout:g} s in the queue for {oldest.request.model}; the server is busy",
                s.retry_after(),
            )
        )
    cap = s.config.switch_max_wait
    for model in [m for m, at in s.evicted.items() if now - at >= cap]:
        del s.evicted[model]  # from now on it changes no request's clock
    limit = s.config.drain_max_wait
    for up in s.ups.values():
        for resident in up.residents.values():
            since = resident.draining_since
            if since is not None and now - since >= limit:
                resident.draining_since = None  # give up: its held requests run again
                up.cooling[resident.model] = now + limit
        for model in [m for m, until in up.cooling.items() if until <= now]:
            del up.cooling[model]
        for model in [m for m, (until, _) in up.failed.items() if until <= now]:
            del up.failed[model]


def _admit_all(s: Scheduler, now: float, actions: list[Action]) -> None:
    """Admit in fair order across models while anything fits: a request for a loaded model is
    never held behind one that needs a switch."""
    while True:
        best: tuple[Waiting, UpstreamState] | None = None
        for waiting in s.queue.by_model.values():
            for w in waiting:
                req = w.request
                up = pick_admission(req, s.candidates(req), s.policies, s.config.default_slots)
                if up is not None:
                    if best is None or w.order < best[0].order:
                        best = (w, up)
                    break
                if req.upstreams is None and req.keys is None:
                    break  # no other request for this model can fit anywhere either
        if best is None:
            return
        actions.append(s.admit_waiting(best[0], best[1], now))


def _room(s: Scheduler, up: UpstreamState, model: str, now: float) -> RoomPlan | None:
    return plan_room(
        up,
        model,
        up.size_of(model, s.policies.get(model)),
        policy_of=s.policies.get,
        active=s.active,
        manage_all=s.config.manage_all,
        now=now,
    )


def _plan(s: Scheduler, now: float, actions: list[Action]) -> bool:
    """Start the loads the rules allow; True if a drain ended (held requests may run)."""
    demands = collect(s, now, actions)
    released = False
    claimed: set[str] = set()  # upstreams that got their one load (or switch) this round
    covered: set[tuple[str, str]] = set()  # (model, upstream) now loading or switching
    for up in s.ups.values():
        switch = up.switch
        if switch is None:
            continue
        groups = [
            g for g, d in demands.items() if up.name in d.ups and d.key_on(up.name) == switch.target
        ]
        plan = _room(s, up, switch.target, now) if groups and up.loading is None else None
        if plan is None:
            released |= _end_switch(up)
            continue
        first = min((demands.pop(g) for g in groups), key=lambda d: d.first.order)
        claimed.add(up.name)
        covered.add((switch.target, up.name))
        if plan.ready:
            start_load(s, up, switch.target, plan, now, actions, first.first.request.key)
        else:
            released |= _drain(up, plan.drain, now)
    order = sorted(
        demands.values(),
        key=lambda d: (not d.starved, d.since if d.starved else 0.0, d.first.order),
    )
    for demand in order:
        if any((demand.key_on(name), name) in covered for name in demand.ups):
            continue
        options = []
        for up in demand.ups.values():
            if up.name in claimed or up.loading is not None or up.switch is not None:
                continue
            model = demand.key_on(up.name)
            if model in up.unloading:
                continue
            plan = _room(s, up, model, now)
            if plan is not None:
                options.append((plan_cost(up, plan), up, plan))
        if not options:
            continue
        _, up, plan = min(options, key=lambda o: o[0])
        model, key = demand.key_on(up.name), demand.first.request.key
        if plan.ready:
            reason: Literal["demand", "starved"] = "starved" if demand.starved else "demand"
            start_load(s, up, model, plan, now, actions, key, reason)
        elif demand.starved:
            up.switch = Switch(model, now)
            _drain(up, plan.drain, now)
        else:
            continue  # the busy models keep serving their queues: fewer switches
        claimed.add(up.name)
        covered.add((model, up.name))
    return released


def _drain(up: UpstreamState, victims: tuple[str, ...], now: float) -> bool:
    released = False
    for resident in up.residents.values():
        if resident.model in victims:
            if resident.draining_since is None:
                resident.draining_since = now
        elif resident.draining_since is not None:
            resident.draining_since = None
            released = True
    return released


def _end_switch(up: UpstreamState) -> bool:
    up.switch = None
    return _drain(up, (), 0.0)


def start_load(
    s: Scheduler,
    up: UpstreamState,
    model: str,
    plan: RoomPlan,
    now: float,
    actions: list[Action],
    key: str | None,
    reason: Literal["demand", "starved", "admin"] = "starved",
) -> None:
    for victim in plan.evict:
        s.evicted[victim] = now
        resident = up.residents.pop(victim)
        resident.draining_since = None
        up.unloading[victim] = resident
        actions.append(Unload(up.name, victim, "make_room"))
    _end_switch(up)
    up.loading, up.loading_since = model, now
    s.load_history.charge(key, now)
    actions.append(Load(up.name, model, plan.evict, reason, key))


def ttl_of(s: Scheduler, up: UpstreamState, model: str, owned: bool) -> float | None:
    """Idle seconds before lmgate unloads this model; None: never."""
    policy = s.policies.get(model)
    if not up.spec.can_load or (policy is not None and policy.pinned):
        return None
    if not (owned or s.config.manage_all):
        return None
    ttl = policy.ttl if policy is not None and policy.ttl is not None else s.config.model_ttl
    return ttl if ttl > 0 else None


def _idle(s: Scheduler, now: float, actions: list[Action]) -> None:
    for up in s.ups.values():
        for resident in list(up.residents.values()):
            if resident.in_flight or resident.draining_since is not None or resident.kept:
                continue
            ttl = ttl_of(s, up, resident.model, resident.owned)
            if ttl is None or now - resident.last_used < ttl:
                continue
            if s.queue.wanted(resident.model):
                continue
            del up.residents[resident.model]
            up.unloading[resident.model] = resident
            actions.append(Unload(up.name, resident.model, "idle_ttl"))


def next_deadline(s: Scheduler, now: float) -> float | None:
    times: list[float] = []
    cfg = s.config
    oldest = s.queue.oldest()
    if oldest is not None:
        times.append(oldest.arrival + cfg.queue_timeout)
        times.extend(
            t
            for w in s.queue.entries.values()
            if (t := kept_since(s, w) + cfg.switch_max_wait) > now
        )
    for up in s.ups.values():
        times.extend(until for until, _ in up.failed.values())
        times.extend(up.cooling.values())
        for r in up.residents.values():
            if r.draining_since is not None:
                times.append(r.draining_since + cfg.drain_max_wait)
            ttl = None if r.kept else ttl_of(s, up, r.model, r.owned)
            if ttl is not None and not r.in_flight:
                times.append(r.last_used + ttl)
    future = [t for t in times if t > now]
    return min(future) if future else None


def explicit_load(
    s: Scheduler, model: str, now: float, upstream: str | None, key: str | None
) -> list[Action]:
    """A load asked for by name (admin route, preload): the victim rules of a switch, but it
    never waits or drains; refused while a load runs or if only busy or pinned models could
    make room."""
    names = [upstream] if upstream is not None else list(s.ups)
    ups = [s.ups[n] for n in names if n in s.ups and s.ups[n].spec.can_load]
    if not ups:
        raise LoadRefused("no_upstream", 409, "no upstream here can load models")
    options = []
    for up in ups:
        busy = up.loading is not None or up.switch is not None
        if busy or model in up.residents or model in up.unloading:
            continue
        plan = _room(s, up, model, now)
        if plan is not None and plan.ready:
            options.append((plan_cost(up, plan), up, plan))
    if not options:
        raise LoadRefused(
            "busy",
            409,
            f"{model} cannot be loaded now: it is loaded, a load is running, or only "
            "pinned or busy models could make room",
            retry_after=s.config.load_estimate_s,
        )
    _, up, plan = min(options, key=lambda o: o[0])
    actions: list[Action] = []
    start_load(s, up, model, plan, now, actions, key, "admin")
    return actions
