"""A fake clock and a simulated upstream that drive the scheduler core and check every action
against what a real upstream would suffer: an unload under a running answer, more answers
than slots, two loads at once, a limit exceeded, a request answered twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from lmgate.schedule import (
    Action,
    Admit,
    Load,
    ModelPolicy,
    Reject,
    Request,
    Scheduler,
    SchedulerConfig,
    Unload,
    UpstreamSpec,
)


class World:
    def __init__(
        self,
        config: SchedulerConfig | None = None,
        upstreams: list[UpstreamSpec] | None = None,
        *,
        policies: Mapping[str, ModelPolicy] | None = None,
        sizes: Mapping[str, int] | None = None,
        slots: Mapping[str, int] | None = None,
        active: str | None = None,
    ) -> None:
        self.config = config or SchedulerConfig()
        specs = upstreams or [UpstreamSpec("lms")]
        self.specs = {s.name: s for s in specs}
        self.sched = Scheduler(self.config, specs, policies=policies, active=active)
        self.policies = dict(policies or {})
        self.sizes = dict(sizes or {})
        self.slots = dict(slots or {})  # reported `parallel` per model
        self.now = 0.0
        self.loaded: dict[str, set[str]] = {s.name: set() for s in specs}
        self.loading: dict[str, str | None] = {s.name: None for s in specs}
        self.in_flight: Counter[tuple[str, str]] = Counter()
        self.running: dict[str, tuple[str, str]] = {}
        self.orphans: set[str] = set()  # running on an instance someone else unloaded
        self.submitted: dict[str, Request] = {}
        self.arrived: dict[str, float] = {}
        self.ended: dict[str, Action | str] = {}
        self.admits: list[Admit] = []
        self.rejects: list[Reject] = []
        self.loads: list[Load] = []
        self.unloads: list[Unload] = []
        self.evicted_at: dict[str, float] = {}
        self.auto_unload = True

    # -- the upstream's side ------------------------------------------------------------------

    def preload(self, upstream: str, *models: str, owned: bool = True) -> None:
        for model in models:
            self.loaded[upstream].add(model)
            if owned:
                self.apply(self.sched.load_finished(upstream, model, self.now, self._slots(model)))
        if not owned:
            self.observe(upstream)

    def observe(self, upstream: str = "lms") -> list[Action]:
        listing = {m: self.slots.get(m) for m in self.loaded[upstream]}
        return self.apply(self.sched.observe(upstream, self.now, listing, self.sizes))

    def complete_load(self, upstream: str = "lms", *, ok: bool = True) -> list[Action]:
        model = self.loading[upstream]
        assert model is not None, "no load is running"
        self.loading[upstream] = None
        if not ok:
            return self.apply(self.sched.load_failed(upstream, model, self.now, "it broke"))
        self.loaded[upstream].add(model)
        self._check_limits(upstream)
        return self.apply(self.sched.load_finished(upstream, model, self.now, self._slots(model)))

    def _slots(self, model: str) -> int | None:
        return self.slots.get(model)

    def _check_limits(self, upstream: str) -> None:
        spec = self.specs[upstream]
        models = self.loaded[upstream] | ({self.loading[upstream]} - {None})  # type: ignore[operator]
        if spec.max_loaded_models is not None:
            assert len(models) <= spec.max_loaded_models, models
        if spec.memory_budget is not None:
            assert sum(self._size(m) for m in models) <= spec.memory_budget, models

    def _size(self, model: str) -> int:
        policy = self.policies.get(model)
        if policy is not None and policy.size_bytes is not None:
            return policy.size_bytes
        return self.sizes.get(model, 0)

    # -- the clients' side --------------------------------------------------------------------

    def submit(self, rid: str, key: str = "k", model: str = "m", **fields: object) -> list[Action]:
        request = Request(rid, key, model, **fields)  # type: ignore[arg-type]
        self.submitted[rid] = request
        self.arrived[rid] = self.now
        return self.apply(self.sched.submit(request, self.now))

    def finish(self, rid: str) -> list[Action]:
        upstream, model = self.running.pop(rid)
        if rid in self.orphans:
            self.orphans.discard(rid)
        else:
            self.in_flight[upstream, model] -= 1
        return self.apply(self.sched.finish(rid, self.now))

    def unloaded_elsewhere(self, upstream: str, model: str) -> list[Action]:
        """Someone else unloads a model: answers running on it are lost (they no longer take
        a slot of a later instance) and the next listing shows it gone."""
        self.loaded[upstream].discard(model)
        for rid, where in self.running.items():
            if where == (upstream, model):
                self.orphans.add(rid)
        self.in_flight[upstream, model] = 0
        return self.observe(upstream)

    def cancel(self, rid: str) -> list[Action]:
        if rid in self.running:
            return self.finish(rid)
        assert rid not in self.ended
        self.ended[rid] = "cancelled"
        return self.apply(self.sched.cancel(rid, self.now))

    def advance(self, seconds: float) -> list[Action]:
        self.now += seconds
        return self.apply(self.sched.tick(self.now))

    # -- checks -------------------------------------------------------------------------------

    def apply(self, actions: list[Action]) -> list[Action]:
        out = list(actions)
        for action in actions:
            if isinstance(action, Admit | Reject):
                assert action.request_id in self.submitted, action
                assert action.request_id not in self.ended, f"ended twice: {action}"
                self.ended[action.request_id] = action
            if isinstance(action, Admit):
                self._on_admit(action)
            elif isinstance(action, Reject):
                assert action.status in (409, 429, 503), action
                self.rejects.append(action)
            elif isinstance(action, Unload):
                out += self._on_unload(action)
            else:
                assert self.loading[action.upstream] is None, "two loads at once"
                assert action.model not in self.loaded[action.upstream], action
                self.loading[action.upstream] = action.model
                self._check_limits(action.upstream)
                self.loads.append(action)
        return out

    def _on_admit(self, action: Admit) -> None:
        spec = self.specs[action.upstream]
        request = self.submitted[action.request_id]
        assert action.model == request.model
        assert request.upstreams is None or action.upstream in request.upstreams
        if spec.can_load:
            assert action.model in self.loaded[action.upstream], f"not loaded: {action}"
        flight = self.in_flight[action.upstream, action.model]
        assert flight < self._slot_limit(action.upstream, action.model), f"over slots: {action}"
        if spec.max_concurrent is not None:
            total = sum(n for (u, _), n in self.in_flight.items() if u == action.upstream)
            assert total < spec.max_concurrent
        self.in_flight[action.upstream, action.model] += 1
        self.running[action.request_id] = (action.upstream, action.model)
        self.admits.append(action)

    def _slot_limit(self, upstream: str, model: str) -> int:
        policy = self.policies.get(model)
        if policy is not None and policy.slots is not None:
            return policy.slots
        if model in self.slots:
            return self.slots[model]
        return self.specs[upstream].default_slots or self.config.default_slots

    def _on_unload(self, action: Unload) -> list[Action]:
        assert self.in_flight[action.upstream, action.model] == 0, f"busy eviction: {action}"
        assert action.model in self.loaded[action.upstream], action
        policy = self.policies.get(action.model)
        assert policy is None or not policy.pinned, f"pinned model unloaded: {action}"
        self.unloads.append(action)
        if action.reason == "make_room":
            self.evicted_at[action.model] = self.now
        if not self.auto_unload:
            return []
        self.loaded[action.upstream].discard(action.model)
        return self.apply(self.sched.unloaded(action.upstream, action.model, self.now))

    # -- reading ------------------------------------------------------------------------------

    def admitted(self) -> list[str]:
        return [a.request_id for a in self.admits]

    def status_of(self, rid: str) -> str:
        ended = self.ended.get(rid)
        if ended is None:
            return "waiting"
        if isinstance(ended, Admit):
            return "admitted"
        if isinstance(ended, Reject):
            return f"rejected {ended.status} {ended.code}"
        return str(ended)

    def waiting(self) -> list[str]:
        return [w.request_id for w in self.sched.snapshot(self.now).waiting]
