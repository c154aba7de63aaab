"""The scheduler's decisions as a synchronous state machine: events in, actions out.

No I/O, no asyncio, no clock of its own: every event carries `now` (monotonic seconds), so the
core is tested with a fake clock and replayed by the simulator exactly as the shell drives it.
After every event the core is settled: no waiting request could be admitted, and every load the
rules allow has been asked for. The shell carries out the actions in list order.

Cost: a request that finds its model loaded with a free slot is admitted on arrival without
touching the queue: `submit` plus `finish` take about 1.5 µs of CPU, 5 µs with building the
request (`python -m timeit -s "from lmgate.schedule.simulate import fast_path as f; s = f()"
"s()"`), also while hundreds of requests wait for another model (tests/schedule/test_cost.py).
With a queue, each event costs O(models + loaded instances), plus O(waiting) only for models
that need a load.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from lmgate.schedule import demand, planner
from lmgate.schedule.demand import reject
from lmgate.schedule.fairness import FairQueue, Waiting
from lmgate.schedule.loadcap import LoadHistory
from lmgate.schedule.placement import pick_admission
from lmgate.schedule.types import (
    NO_UPSTREAM,
    QUEUE_FULL,
    STATUS,
    Action,
    Admit,
    ModelPolicy,
    QueueInfo,
    Reject,
    Request,
    SchedulerConfig,
    Snapshot,
    UpstreamSpec,
)
from lmgate.schedule.upstreams import Resident, UpstreamState
from lmgate.schedule.views import Estimates, build_snapshot, queue_info


class Running:
    __slots__ = ("admitted", "request", "resident", "upstream")

    def __init__(self, request: Request, upstream: UpstreamState, resident: Resident, at: float):
        self.request = request
        self.upstream = upstream
        self.resident = resident
        self.admitted = at


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        upstreams: list[UpstreamSpec],
        *,
        policies: Mapping[str, ModelPolicy] | None = None,
        active: str | None = None,
    ) -> None:
        self.config = config
        self.ups: dict[str, UpstreamState] = {s.name: UpstreamState(s) for s in upstreams}
        self._all = tuple(self.ups.values())
        self.policies: dict[str, ModelPolicy] = dict(policies or {})
        self.active = active
        self.queue = FairQueue()
        self.running: dict[str, Running] = {}
        self.load_history = LoadHistory()
        self.evicted: dict[str, float] = {}  # model: last eviction to make room (recent only)
        self.keeping: set[str] = set()  # loads that keep a model loaded (`request_load(keep=)`)
        self.estimates = Estimates(config.service_estimate_s, config.load_estimate_s)

    # -- events -------------------------------------------------------------------------------

    def submit(self, request: Request, now: float) -> list[Action]:
        """A request arrives. Admitted at once if its model has a free slot, else queued."""
        if request.id in self.running or request.id in self.queue:
            raise ValueError(f"request id {request.id!r} is already known")
        ups = self.candidates(request)
        if not ups:
            why = "none of the upstreams this request may use takes requests (draining or removed)"
            return [reject(request.id, NO_UPSTREAM, why)]
        up = pick_admission(request, ups, self.policies, self._slots)
        if up is not None:
            return [self._admit(request, up, now, 0.0, 0)]
        refused = demand.refusal(self, request, now)
        if refused is not None:
            return [refused]
        actions: list[Action] = []
        if len(self.queue) >= self.config.queue_max:
            victim = self.queue.crowding_victim(request)
            if victim is None:
                return [self._queue_full(request.id)]
            self.queue.remove(victim.request.id)
            actions.append(self._queue_full(victim.request.id))
        self.queue.push(request, now)
        return actions + self._settle(now)

    def cancel(self, request_id: str, now: float) -> list[Action]:
        """The client went away: a waiting request leaves the queue, a running one ends."""
        if request_id in self.running:
            return self.finish(request_id, now)
        if self.queue.remove(request_id) is None:
            return []
        return self._settle(now)

    def finish(self, request_id: str, now: float) -> list[Action]:
        """An admitted request's answer ended (or failed): its slot is free."""
        run = self.running.pop(request_id, None)
        if run is None:
            return []
        resident, up = run.resident, run.upstream
        resident.in_flight -= 1
        resident.last_used = now
        up.in_flight -= 1
        self.estimates.served(resident.model, now - run.admitted)
        if resident.implicit and not resident.in_flight:
            if up.residents.get(resident.model) is resident:
                del up.residents[resident.model]
        if up.switch is None and not self._may_unblock(up, resident):
            return []
        return self._settle(now)

    def load_started(self, upstream: str, model: str, now: float) -> list[Action]:
        """lmgate began a load outside the core's own decisions (e.g. a preload at start)."""
        up = self.ups.get(upstream)
        if up is None:  # removed meanwhile
            return []
        if up.loading is None:
            up.loading, up.loading_since = model, now
        return self._settle(now)

    def load_finished(
        self, upstream: str, model: str, now: float, slots: int | None = None
    ) -> list[Action]:
        """The load ended well; `slots` is the new instance's `parallel` when known."""
        up = self.ups.get(upstream)
        if up is None:
            return []
        if up.loading == model:
            self.estimates.loaded(model, now - up.loading_since)
            up.loading = None
        resident = up.residents.get(model)
        if resident is None:
            resident = self._resident(up, model, slots, now, owned=True)
            up.residents[model] = resident
        else:
            resident.owned = True
            resident.last_used = now
            if slots is not None:
                resident.reported_slots = slots
                resident.slots = up.slots_for(self.policies.get(model), slots, self._slots)
        if model in self.keeping:
            self.keeping.discard(model)
            resident.kept = True
        up.failed.pop(model, None)
        return self._settle(now)

    def load_failed(self, upstream: str, model: str, now: float, reason: str) -> list[Action]:
        """The load failed: requests that can only wait for it are refused, and the model is
        not tried again on this upstream for `load_retry_s`."""
        up = self.ups.get(upstream)
        if up is None:
            return []
        if up.loading == model:
            up.loading = None
        up.failed[model] = (now + self.config.load_retry_s, reason)
        self.keeping.discard(model)
        return self._settle(now)

    def unloaded(self, upstream: str, model: str, now: float) -> list[Action]:
        """The model is gone from the upstream (our unload, or someone else's)."""
        up = self.ups.get(upstream)
        if up is None:
            return []
        up.unloading.pop(model, None)
        resident = up.residents.get(model)
        if resident is not None and not resident.implicit:
            del up.residents[model]
        return self._settle(now)

    def unload_failed(self, upstream: str, model: str, now: float) -> list[Action]:
        """An unload we asked for did not happen: the model is still loaded."""
        up = self.ups.get(upstream)
        if up is None:
            return []
        resident = up.unloading.pop(model, None)
        if resident is not None and model not in up.residents:
            resident.last_used = now
            up.residents[model] = resident
        return self._settle(now)

    def observe(
        self,
        upstream: str,
        now: float,
        loaded: Mapping[str, int | None],
        sizes: Mapping[str, int] | None = None,
    ) -> list[Action]:
        """The upstream's listing: loaded model keys with their summed `parallel` (or None),
        and `size_bytes` of the models it has. Models that appear here without lmgate loading
        them are someone else's: never unloaded for idleness unless `manage_all`."""
        up = self.ups.get(upstream)
        if up is None:
            return []
        up.apply_listing(loaded, sizes, now, self.policies, self._slots)
        return self._settle(now)

    def tick(self, now: float) -> list[Action]:
        """Time passed: queue timeouts, drain limits, starvation, idle TTL."""
        return self._settle(now)

    # -- configuration ------------------------------------------------------------------------

    def set_upstream(self, spec: UpstreamSpec, now: float) -> list[Action]:
        """Add an upstream, or change one's limits or capability (found out after start);
        what it has loaded and runs is kept. A draining one takes no request that names
        upstreams (every request once there are several): those waiting that may go nowhere
        else are refused."""
        up = self.ups.get(spec.name)
        if up is None:
            self.ups[spec.name] = UpstreamState(spec)
            self._all = tuple(self.ups.values())
        else:
            up.spec = spec
        actions = self._orphans(f"upstream '{spec.name}' is draining") if spec.draining else []
        return actions + self._settle(now)

    def drop_upstream(self, name: str, now: float) -> list[Action]:
        """An upstream removed at runtime: nothing is admitted or loaded there any more, and
        waiting requests that may go nowhere else are refused. What runs there ends normally
        (`finish` frees its slot as ever); events still naming it are ignored."""
        if self.ups.pop(name, None) is None:
            return []
        self._all = tuple(self.ups.values())
        return self._orphans(f"upstream '{name}' was removed") + self._settle(now)

    def _orphans(self, why: str) -> list[Action]:
        """Refuse the waiting requests none of whose upstreams may take them any more."""
        actions: list[Action] = []
        for waiting in list(self.queue.entries.values()):
            request = waiting.request
            if request.upstreams is not None and not self.candidates(request):
                self.queue.remove(request.id)
                message = f"{why} while this request waited, and no other upstream may serve it"
                actions.append(reject(request.id, NO_UPSTREAM, message))
        return actions

    def set_active(self, model: str | None) -> None:
        """The active model is evicted last; the core never clears it."""
        self.active = model

    def set_policy(self, model: str, policy: ModelPolicy | None, now: float) -> list[Action]:
        """A profile changed: slots, TTL, pin or size apply from now on."""
        if policy is None:
            self.policies.pop(model, None)
        else:
            self.policies[model] = policy
        for up in self._all:
            resident = up.residents.get(model)
            if resident is not None:
                resident.slots = up.slots_for(policy, resident.reported_slots, self._slots)
                resident.size = up.size_of(model, policy)
        return self._settle(now)

    def request_load(
        self,
        model: str,
        now: float,
        *,
        upstream: str | None = None,
        key: str | None = None,
        keep: bool = False,
    ) -> list[Action]:
        """An explicit load (admin route, preload): the same rules as a switch, but it never
        waits; it raises `LoadRefused` when a load runs or only busy models could make room.
        `keep`: the load keeps a model loaded after its idle unload, so its idle TTL waits for
        the next request (else it would be unloaded and loaded again every TTL)."""
        actions = planner.explicit_load(self, model, now, upstream, key)
        if keep:
            self.keeping.add(model)
        return actions

    # -- reading ------------------------------------------------------------------------------

    def position(self, request_id: str, now: float) -> QueueInfo | None:
        waiting = self.queue.entries.get(request_id)
        return None if waiting is None else queue_info(self, waiting, now)

    def positions(self, now: float) -> dict[str, QueueInfo]:
        return {w.request.id: queue_info(self, w, now) for w in self.queue.entries.values()}

    def snapshot(self, now: float) -> Snapshot:
        return build_snapshot(self, now)

    def next_deadline(self, now: float) -> float | None:
        """When `tick` next has something to do after `now` (None: nothing is timed)."""
        return planner.next_deadline(self, now)

    # -- internals ----------------------------------------------------------------------------

    @property
    def _slots(self) -> int:
        return self.config.default_slots

    def _may_unblock(self, up: UpstreamState, resident: Resident) -> bool:
        """Could this freed slot let a waiting request in or a load start? Only if someone
        waits for this model, or for this upstream's concurrency, or the model just went
        idle (an eviction may now be possible)."""
        queue = self.queue
        if not queue:
            return False
        return (
            resident.model in queue.by_model
            or resident.model in queue.keyed
            or up.spec.max_concurrent is not None
            or not resident.in_flight
        )

    def candidates_any(self) -> tuple[UpstreamState, ...]:
        return self._all

    def candidates(self, request: Request) -> tuple[UpstreamState, ...]:
        if request.upstreams is None:
            return self._all
        ups = self.ups
        return tuple(
            ups[n] for n in sorted(request.upstreams) if n in ups and not ups[n].spec.draining
        )

    def _resident(
        self, up: UpstreamState, model: str, slots: int | None, now: float, *, owned: bool
    ) -> Resident:
        return up.new_resident(model, slots, now, owned, self.policies.get(model), self._slots)

    def _admit(
        self, request: Request, up: UpstreamState, now: float, waited: float, position: int
    ) -> Admit:
        model = request.key_on(up.name)
        resident = up.residents.get(model)
        if resident is None:  # an upstream that serves whatever is asked
            resident = self._resident(up, model, None, now, owned=False)
            resident.implicit = True
            up.residents[model] = resident
        resident.in_flight += 1
        resident.last_used = now
        resident.kept = False
        up.in_flight += 1
        self.running[request.id] = Running(request, up, resident, now)
        return Admit(request.id, up.name, model, waited, position)

    def admit_waiting(self, waiting: Waiting, up: UpstreamState, now: float) -> Admit:
        self.queue.served(waiting.request.id)
        return self._admit(waiting.request, up, now, now - waiting.arrival, waiting.position)

    def retry_after(self) -> int:
        """Seconds after which trying again is worth it: roughly until the queue has started."""
        slots = sum(r.slots for up in self._all for r in up.residents.values()) or 1
        wait = self.estimates.drain_time(len(self.queue), slots)
        return math.ceil(min(max(1.0, wait), max(1.0, self.config.queue_timeout)))

    def _queue_full(self, request_id: str) -> Reject:
        return Reject(
            request_id,
            STATUS[QUEUE_FULL],
            QUEUE_FULL,
            f"the queue is full ({self.config.queue_max} requests waiting); try again later",
            self.retry_after(),
        )

    def _settle(self, now: float) -> list[Action]:
        return planner.settle(self, now)
