"""Model switches: loads on demand, victims (idle, least recently used, never pinned, the
active model last), drains with their limits, the starvation cap, one load at a time, memory
budgets, who may cause loads, failed loads."""

from __future__ import annotations

import pytest

from lmgate.schedule import Load, LoadRefused, ModelPolicy, SchedulerConfig, Unload, UpstreamSpec
from tests.schedule.world import World

ONE = [UpstreamSpec("lms", max_loaded_models=1)]
TWO = [UpstreamSpec("lms", max_loaded_models=2)]


def test_an_unloaded_model_is_loaded_when_there_is_room_and_its_requests_then_run() -> None:
    world = World(SchedulerConfig(default_slots=2), TWO)
    world.submit("r0", model="a", key="alice")
    world.submit("r1", model="a")
    assert world.loads == [Load("lms", "a", (), "demand", "alice")]
    assert world.waiting() == ["r0", "r1"]
    world.now = 4.0
    world.complete_load()
    assert world.admitted() == ["r0", "r1"]
    assert world.admits[0].waited == 4.0


def test_the_least_recently_used_idle_model_makes_room() -> None:
    world = World(SchedulerConfig(), TWO)
    world.preload("lms", "old", "new")
    world.now = 1.0
    world.submit("u", model="old")
    world.finish("u")  # "old" is now the more recently used
    world.now = 2.0
    world.submit("r", model="third")
    assert world.unloads == [Unload("lms", "new", "make_room")]
    assert world.loads[-1].evicting == ("new",)


def test_pinned_models_are_never_evicted_and_the_active_model_goes_last() -> None:
    world = World(
        SchedulerConfig(),
        [UpstreamSpec("lms", max_loaded_models=3)],
        policies={"pin": ModelPolicy(pinned=True)},
        active="act",
    )
    world.preload("lms", "act", "pin", "other")
    world.now = 10.0
    world.submit("x", model="other")
    world.finish("x")  # the active model is now the least recently used...
    world.submit("r", model="new")
    assert [u.model for u in world.unloads] == ["other"]  # ...and still goes last
    world.complete_load()
    world.submit("s", model="newer")  # "new" is busy, "pin" is pinned: only "act" is left
    assert world.unloads[-1] == Unload("lms", "act", "make_room")
    assert world.sched.active == "act"  # evicting it never clears the activation
    world.complete_load()
    world.finish("r")
    world.finish("s")
    world.now = 20.0
    world.submit("back", model="act")  # needing it again simply loads it again
    assert world.loads[-1].model == "act" and world.loads[-1].evicting == ("new",)
    assert "pin" not in {u.model for u in world.unloads}


def test_models_loaded_by_someone_else_are_left_alone_unless_managed() -> None:
    for manage_all in (False, True):
        world = World(SchedulerConfig(manage_all=manage_all), ONE)
        world.preload("lms", "theirs", owned=False)
        world.submit("r", model="mine")
        if manage_all:
            assert world.unloads == [Unload("lms", "theirs", "make_room")]
        else:
            assert not world.unloads and not world.loads
            assert world.status_of("r") == "waiting"


def test_a_busy_model_is_never_evicted_the_switch_waits_for_it_to_go_idle() -> None:
    world = World(SchedulerConfig(default_slots=2, switch_max_wait=60.0), ONE)
    world.preload("lms", "x")
    world.submit("x0", model="x")
    world.submit("y0", model="y")
    world.advance(10.0)
    assert not world.loads
    world.submit("x1", model="x")  # x is not draining yet: it keeps serving
    assert world.status_of("x1") == "admitted"
    world.finish("x0")
    world.finish("x1")
    assert world.unloads == [Unload("lms", "x", "make_room")]
    assert world.loads[-1].model == "y"


def test_same_model_requests_are_grouped_until_the_starvation_cap_then_the_model_drains() -> None:
    world = World(SchedulerConfig(default_slots=1, switch_max_wait=30.0), ONE)
    world.preload("lms", "x")
    world.submit("x0", model="x", key="a")
    for i in range(1, 4):
        world.submit(f"x{i}", model="x", key="a")
    world.submit("y0", model="y", key="b")
    world.now = 10.0
    world.finish("x0")  # x still has a queue: x1 runs, no switch yet
    assert world.status_of("x1") == "admitted" and not world.loads
    world.now = 29.0
    world.finish("x1")
    assert world.status_of("x2") == "admitted"
    world.advance(1.0)  # y0 has waited 30 s: x drains, its queue is held
    snap = world.sched.snapshot(world.now)
    assert snap.upstreams[0].switching_to == "y"
    assert [m.draining for m in snap.models] == [True]
    world.submit("x4", model="x", key="a")
    world.finish("x2")
    assert world.status_of("x3") == "waiting" and world.status_of("x4") == "waiting"
    assert world.unloads == [Unload("lms", "x", "make_room")]
    assert world.loads[-1] == Load("lms", "y", ("x",), "starved", "b")
    world.complete_load()
    assert world.status_of("y0") == "admitted"


def test_a_drain_that_lasts_too_long_is_given_up_and_nothing_is_cut() -> None:
    config = SchedulerConfig(default_slots=3, switch_max_wait=5.0, drain_max_wait=20.0)
    world = World(config, ONE)
    world.preload("lms", "x")
    world.submit("long", model="x")
    world.submit("y0", model="y")
    world.advance(5.0)
    world.submit("x1", model="x")
    assert world.status_of("x1") == "waiting"  # held: x drains
    world.advance(20.0)
    assert world.status_of("x1") == "admitted"  # the drain was given up
    assert not world.unloads and world.status_of("y0") == "waiting"
    assert world.sched.snapshot(world.now).upstreams[0].switching_to is None
    world.submit("x2", model="x")  # not drained again while it cools down
    assert world.status_of("x2") == "admitted"
    world.finish("long")
    world.finish("x1")
    world.finish("x2")
    assert world.loads[-1].model == "y" and not world.in_flight["lms", "x"]


def test_only_one_load_runs_at_a_time_per_upstream() -> None:
    world = World(SchedulerConfig(), [UpstreamSpec("lms", max_loaded_models=3)])
    world.submit("a", model="a")
    world.submit("b", model="b")
    assert [load.model for load in world.loads] == ["a"]
    world.complete_load()
    assert [load.model for load in world.loads] == ["a", "b"]


def test_the_memory_budget_and_the_count_limit_both_apply() -> None:
    gib = 1 << 30
    sizes = {"small": 2 * gib, "mid": 5 * gib, "big": 9 * gib, "huge": 21 * gib}
    world = World(
        SchedulerConfig(),
        [UpstreamSpec("lms", max_loaded_models=3, memory_budget=12 * gib)],
        sizes=sizes,
    )
    world.preload("lms", "small", "mid")
    world.observe()
    world.now = 1.0
    world.submit("u", model="small")
    world.finish("u")
    world.submit("b", model="big")  # 7 GiB in use + 9 > 12: "mid" (LRU) goes, 2 + 9 fits
    assert [u.model for u in world.unloads] == ["mid"]
    world.complete_load()
    world.submit("h", model="huge")
    assert world.status_of("h") == "rejected 503 model_too_large"
    assert world.sched.snapshot(world.now).upstreams[0].bytes_used == 11 * gib


def test_a_key_that_may_not_load_gets_409_unless_another_request_loads_the_model() -> None:
    world = World(SchedulerConfig(), TWO)
    world.preload("lms", "m")
    world.submit("ok", model="m", may_load=False)
    assert world.status_of("ok") == "admitted"
    world.submit("no", model="other", may_load=False)
    assert world.status_of("no") == "rejected 409 load_denied"
    assert not world.loads
    world.submit("loader", model="other", key="admin")
    world.submit("rider", model="other", may_load=False)
    world.complete_load()
    assert world.status_of("rider") == "admitted"


def test_loads_per_hour_are_capped_per_key() -> None:
    world = World(SchedulerConfig(), ONE)
    for i in range(2):
        world.submit(f"r{i}", model=f"m{i}", key="k", max_loads_per_hour=2)
        world.complete_load()
        world.finish(f"r{i}")
        world.now += 60.0
    world.submit("r2", model="m2", key="k", max_loads_per_hour=2)
    reject = world.rejects[-1]
    assert (reject.request_id, reject.status, reject.code) == ("r2", 429, "load_limit")
    assert reject.retry_after == 3600 - 120
    world.now = 3600.0
    world.submit("r3", model="m2", key="k", max_loads_per_hour=2)
    assert world.loads[-1].model == "m2"


def test_a_failed_load_refuses_its_waiters_and_is_not_retried_at_once() -> None:
    world = World(SchedulerConfig(load_retry_s=10.0), TWO)
    world.submit("a", model="bad")
    world.submit("b", model="bad")
    world.complete_load(ok=False)
    assert [world.status_of(r) for r in "ab"] == ["rejected 503 load_failed"] * 2
    assert world.rejects[0].message == "loading bad failed moments ago: it broke"
    world.now = 4.0
    world.submit("c", model="bad")
    assert world.status_of("c") == "rejected 503 load_failed"
    assert world.rejects[-1].retry_after == pytest.approx(6.0)
    world.now = 10.0
    world.submit("d", model="bad")
    assert world.loads[-1].model == "bad" and len(world.loads) == 2


def test_a_model_unloaded_elsewhere_is_loaded_again_when_needed() -> None:
    world = World(SchedulerConfig(), TWO)
    world.preload("lms", "m")
    world.loaded["lms"].discard("m")  # someone else unloads it
    world.observe()
    world.submit("r", model="m")
    assert world.loads[-1].model == "m"


def test_several_upstreams_free_slot_first_then_loaded_then_the_cheapest_load() -> None:
    ups = [
        UpstreamSpec("a", max_loaded_models=1),
        UpstreamSpec("b", max_loaded_models=2, weight=2.0),
    ]
    world = World(SchedulerConfig(default_slots=1), ups)
    world.preload("a", "m")
    world.preload("b", "n")
    world.submit("m0", model="m")
    world.submit("m1", model="m")  # m is loaded on a, full: wait there, no second copy
    assert [a.upstream for a in world.admits] == ["a"] and not world.loads
    world.submit("p0", model="p")  # b has room without evicting: it loads there
    assert world.loads[-1] == Load("b", "p", (), "demand", "k")
    world.submit("q0", model="q", upstreams=frozenset({"a"}))  # only a; m is busy there
    assert world.status_of("q0") == "waiting" and len(world.loads) == 1
    world.finish("m0")
    assert world.status_of("m1") == "admitted" and world.admits[-1].upstream == "a"


def test_admin_loads_obey_the_same_rules() -> None:
    world = World(SchedulerConfig(), ONE)
    world.preload("lms", "x")
    world.submit("busy", model="x")
    with pytest.raises(LoadRefused) as refused:
        world.sched.request_load("y", world.now)
    assert refused.value.status == 409
    world.finish("busy")
    actions = world.apply(world.sched.request_load("y", world.now))
    assert actions == [Unload("lms", "x", "make_room"), Load("lms", "y", ("x",), "admin", None)]
    with pytest.raises(LoadRefused):
        world.sched.request_load("z", world.now)  # a load is running


def test_idle_models_lmgate_loaded_are_unloaded_after_their_ttl() -> None:
    world = World(
        SchedulerConfig(model_ttl=300.0),
        [UpstreamSpec("lms", max_loaded_models=5)],
        policies={
            "short": ModelPolicy(ttl=60.0),
            "never": ModelPolicy(ttl=0.0),
            "pin": ModelPolicy(pinned=True, ttl=1.0),
        },
    )
    world.preload("lms", "short", "never", "pin", "plain")
    world.preload("lms", "theirs", owned=False)
    world.submit("r", model="plain")
    assert world.sched.next_deadline(world.now) == 60.0
    world.advance(60.0)
    assert world.unloads == [Unload("lms", "short", "idle_ttl")]
    world.advance(600.0)
    assert [u.model for u in world.unloads] == ["short"]  # "plain" is busy
    world.finish("r")
    views = {v.model: v.ttl_remaining for v in world.sched.snapshot(world.now).models}
    assert views == {"never": None, "pin": None, "plain": 300.0, "theirs": None}
    world.advance(300.0)
    assert [u.model for u in world.unloads] == ["short", "plain"]
    world.advance(10_000.0)
    assert len(world.unloads) == 2


def test_a_model_loaded_again_to_keep_it_waits_for_a_request_before_its_ttl_runs() -> None:
    world = World(SchedulerConfig(model_ttl=10.0), TWO, active="act")
    world.preload("lms", "act")
    world.advance(10.0)
    assert world.unloads == [Unload("lms", "act", "idle_ttl")]
    world.apply(world.sched.request_load("act", world.now, keep=True))  # keep it loaded
    world.complete_load()
    assert world.sched.next_deadline(world.now) is None
    assert {v.model: v.ttl_remaining for v in world.sched.snapshot(world.now).models} == {
        "act": None
    }
    world.advance(1_000.0)
    assert len(world.unloads) == 1  # no unload-and-load-again every TTL
    world.submit("r", model="act")
    world.finish("r")
    world.advance(10.0)
    assert [u.model for u in world.unloads] == ["act", "act"]  # used: its TTL runs again
    world.apply(world.sched.request_load("act", world.now))  # a plain admin load
    world.complete_load()
    world.advance(10.0)
    assert len(world.unloads) == 3
