"""Random sequences of arrivals, completions, departures, loads and time, checked after every
step against the scheduler's invariants:

- no model is unloaded (or planned away) while it has a request in flight;
- no model gets more requests than its slots, no upstream runs two loads, limits hold;
- the queue never exceeds its bound;
- no request waits past the starvation cap for a model that could be loaded while its
  upstream sits idle;
- every request ends exactly once: admitted or refused (or cancelled by its client).

`World` (tests/schedule/world.py) plays the upstream and asserts the per-action rules.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from lmgate.schedule import ModelPolicy, SchedulerConfig, UpstreamSpec
from tests.schedule.world import World

MODELS = ["m0", "m1", "m2", "m3"]
KEYS = {  # name: (weight, may_load, max_loads_per_hour)
    "k0": (1.0, True, None),
    "k1": (2.0, True, None),
    "k2": (0.5, True, None),
    "guest": (1.0, False, None),
    "capped": (1.0, True, 2),
}
GIB = 1 << 30


class SchedulerMachine(RuleBasedStateMachine):
    world: World

    @initialize(
        upstreams=st.integers(1, 2),
        jit=st.booleans(),
        max_loaded=st.one_of(st.none(), st.integers(1, 3)),
        budget=st.one_of(st.none(), st.integers(6, 16)),
        sizes=st.lists(st.integers(1, 6), min_size=4, max_size=4),
        slots=st.integers(1, 3),
        queue_max=st.integers(2, 12),
        cap=st.floats(1.0, 40.0),
        pin=st.booleans(),
        ttl=st.sampled_from([0.0, 30.0]),
        manage_all=st.booleans(),
        short_drain=st.booleans(),
    )
    def setup(
        self,
        upstreams: int,
        jit: bool,
        max_loaded: int | None,
        budget: int | None,
        sizes: list[int],
        slots: int,
        queue_max: int,
        cap: float,
        pin: bool,
        ttl: float,
        manage_all: bool,
        short_drain: bool,
    ) -> None:
        specs = [
            UpstreamSpec(
                f"u{i}",
                max_loaded_models=max_loaded,
                memory_budget=budget * GIB if budget else None,
            )
            for i in range(upstreams)
        ]
        if jit:
            specs.append(UpstreamSpec("jit", can_load=False, default_slots=1, max_concurrent=2))
        config = SchedulerConfig(
            default_slots=slots,
            queue_max=queue_max,
            queue_timeout=300.0,
            switch_max_wait=cap,
            drain_max_wait=5.0 if short_drain else 1e9,
            model_ttl=ttl,
            manage_all=manage_all,
        )
        policies = {"m0": ModelPolicy(pinned=True)} if pin else {}
        self.world = World(
            config,
            specs,
            policies=policies,
            sizes={m: s * GIB for m, s in zip(MODELS, sizes, strict=True)},
        )
        for spec in specs:
            self.world.observe(spec.name)
        if pin:
            self.world.apply(self.world.sched.request_load("m0", 0.0, upstream="u0"))
        self.foreign: set[tuple[str, str]] = set()
        self.count = 0

    @rule(
        key=st.sampled_from(sorted(KEYS)), model=st.sampled_from(MODELS), where=st.integers(-1, 2)
    )
    def submit(self, key: str, model: str, where: int) -> None:
        self.count += 1
        name = "jit" if where == 2 else f"u{where}"
        ups = frozenset({name}) if where >= 0 and name in self.world.specs else None
        weight, may_load, per_hour = KEYS[key]
        self.world.submit(
            f"r{self.count}",
            key=key,
            model=model,
            upstreams=ups,
            weight=weight,
            may_load=may_load,
            max_loads_per_hour=per_hour,
        )

    @precondition(lambda self: bool(self.world.running))
    @rule(pick=st.integers(0, 10_000))
    def finish(self, pick: int) -> None:
        running = sorted(self.world.running)
        self.world.finish(running[pick % len(running)])

    @precondition(lambda self: bool(self.world.waiting()))
    @rule(pick=st.integers(0, 10_000))
    def cancel(self, pick: int) -> None:
        waiting = self.world.waiting()
        self.world.cancel(waiting[pick % len(waiting)])

    @precondition(lambda self: any(m is not None for m in self.world.loading.values()))
    @rule(ok=st.sampled_from([True, True, True, False]), pick=st.integers(0, 1))
    def complete_load(self, ok: bool, pick: int) -> None:
        names = sorted(u for u, m in self.world.loading.items() if m is not None)
        self.world.complete_load(names[pick % len(names)], ok=ok)

    @rule(seconds=st.floats(0.1, 45.0))
    def advance(self, seconds: float) -> None:
        self.world.advance(seconds)

    @rule(where=st.integers(0, 1), model=st.sampled_from(MODELS))
    def someone_else_loads(self, where: int, model: str) -> None:
        world, name = self.world, f"u{where}"
        if name not in world.specs or model in world.loaded[name] or world.loading[name]:
            return
        spec = world.specs[name]
        models = world.loaded[name] | {model}
        if spec.max_loaded_models is not None and len(models) > spec.max_loaded_models:
            return
        if spec.memory_budget is not None:
            if sum(world.sizes[m] for m in models) > spec.memory_budget:
                return
        world.loaded[name].add(model)
        self.foreign.add((name, model))
        world.observe(name)

    @rule(pick=st.integers(0, 10_000))
    def someone_else_unloads(self, pick: int) -> None:
        world = self.world
        loaded = sorted((u, m) for u, ms in world.loaded.items() for m in ms if u != "jit")
        if not loaded:
            return
        name, model = loaded[pick % len(loaded)]
        self.foreign.discard((name, model))
        world.unloaded_elsewhere(name, model)

    @invariant()
    def queue_is_bounded(self) -> None:
        assert len(self.world.waiting()) <= self.world.config.queue_max

    @invariant()
    def slots_hold(self) -> None:
        for view in self.world.sched.snapshot(self.world.now).models:
            assert view.in_flight <= view.slots, view

    @invariant()
    def ended_requests_are_gone_and_waiting_ones_are_not_ended(self) -> None:
        waiting = set(self.world.waiting())
        assert not waiting & set(self.world.ended)
        assert set(self.world.running) <= {
            r for r, a in self.world.ended.items() if a != "cancelled"
        }

    @invariant()
    def no_request_starves_while_its_upstream_idles(self) -> None:
        world = self.world
        snap = world.sched.snapshot(world.now)
        switching = {u.name: u.switching_to for u in snap.upstreams}
        if world.config.drain_max_wait < 1e9:
            return  # a drain given up lets the switch wait longer, by design
        for view in snap.waiting:
            request = world.submitted[view.request_id]
            if not request.may_load or request.max_loads_per_hour is not None:
                continue
            names = sorted(request.upstreams or world.specs)
            model = request.model
            if any(
                model in world.loaded[u] or world.loading[u] == model or u == "jit" for u in names
            ):
                continue  # it waits for a slot or for its load: not a switch problem
            kept = max(world.arrived[view.request_id], world.evicted_at.get(model, 0.0))
            if world.now - kept < world.config.switch_max_wait:
                continue
            assert any(
                world.loading[u] is not None
                or switching[u] is not None
                or self._cannot_fit(u, model)
                for u in names
            ), (view, world.loaded, switching)

    def _cannot_fit(self, upstream: str, model: str) -> bool:
        world = self.world
        spec = world.specs[upstream]
        pinned = [
            m
            for m in world.loaded[upstream]
            if m != model
            and (
                m in world.policies
                or ((upstream, m) in self.foreign and not world.config.manage_all)
            )
        ]
        if spec.max_loaded_models is not None and len(pinned) + 1 > spec.max_loaded_models:
            return True
        size = sum(world.sizes[m] for m in [*pinned, model])
        return spec.memory_budget is not None and size > spec.memory_budget

    def teardown(self) -> None:
        world = getattr(self, "world", None)
        if world is None:
            return
        for _ in range(10_000):
            loading = sorted(u for u, m in world.loading.items() if m is not None)
            if loading:
                world.complete_load(loading[0])
            elif world.running:
                world.finish(sorted(world.running)[0])
            elif world.waiting():
                world.advance(world.config.queue_timeout)
            else:
                break
        assert set(world.ended) == set(world.submitted)
        assert not world.sched.running and not len(world.sched.queue)


SchedulerMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestScheduler = SchedulerMachine.TestCase
