"""The events the shell reports besides requests: listings, loads it began itself, unloads
that failed, profile changes."""

from __future__ import annotations

from lmgate.schedule import Load, ModelPolicy, SchedulerConfig, Unload, UpstreamSpec
from tests.schedule.world import World


def test_a_listing_with_more_parallel_slots_lets_waiting_requests_in() -> None:
    world = World(SchedulerConfig(default_slots=1))
    world.preload("lms", "m", owned=False)
    for i in range(3):
        world.submit(f"r{i}")
    assert world.admitted() == ["r0"]
    world.slots["m"] = 3
    world.observe()
    assert world.admitted() == ["r0", "r1", "r2"]


def test_answers_on_an_instance_someone_else_unloaded_do_not_hold_the_next_one() -> None:
    world = World(SchedulerConfig(default_slots=1), [UpstreamSpec("lms", max_loaded_models=2)])
    world.preload("lms", "m")
    world.submit("old")
    world.unloaded_elsewhere("lms", "m")
    world.submit("new")
    assert world.loads[-1].model == "m"  # not loaded any more: load it again
    world.complete_load()
    assert world.status_of("new") == "admitted"
    world.finish("old")  # the lost answer ends: the new instance's slot count is untouched
    world.submit("next")
    assert world.status_of("next") == "waiting"
    world.finish("new")
    assert world.status_of("next") == "admitted"


def test_a_load_lmgate_began_itself_counts_as_the_one_load_and_as_owned() -> None:
    world = World(SchedulerConfig(model_ttl=60.0), [UpstreamSpec("lms", max_loaded_models=3)])
    world.apply(world.sched.load_started("lms", "pre", world.now))
    world.loading["lms"] = "pre"
    world.submit("r", model="other")
    assert not world.loads  # one load at a time
    world.complete_load()
    assert world.loads == [Load("lms", "other", (), "demand", "k")]
    world.complete_load()
    world.finish("r")
    world.advance(60.0)
    assert {u.model for u in world.unloads} == {"pre", "other"}


def test_an_unload_that_failed_leaves_the_model_loaded() -> None:
    world = World(SchedulerConfig(model_ttl=10.0))
    world.auto_unload = False
    world.preload("lms", "m")
    world.advance(10.0)
    assert world.unloads == [Unload("lms", "m", "idle_ttl")]
    world.apply(world.sched.unload_failed("lms", "m", world.now))
    world.submit("r")
    assert world.status_of("r") == "admitted"


def test_a_profile_change_applies_at_once() -> None:
    world = World(SchedulerConfig(default_slots=1, model_ttl=30.0))
    world.preload("lms", "m")
    world.submit("r0")
    world.submit("r1")
    world.policies["m"] = ModelPolicy(slots=2, pinned=True)
    world.apply(world.sched.set_policy("m", world.policies["m"], world.now))
    assert world.status_of("r1") == "admitted"
    world.finish("r0")
    world.finish("r1")
    assert world.sched.next_deadline(world.now) is None  # pinned: no idle unload to wait for
    world.advance(1000.0)
    assert not world.unloads


def test_an_upstream_found_able_to_load_later_starts_switching() -> None:
    config = SchedulerConfig(default_slots=1, manage_all=True)  # "a" was JIT-loaded upstream
    world = World(config, [UpstreamSpec("lms", can_load=False)])
    world.submit("jit", model="a")
    assert world.status_of("jit") == "admitted" and not world.loads  # JIT on the upstream
    world.submit("b0", model="b")
    assert world.status_of("b0") == "admitted"
    spec = UpstreamSpec("lms", max_loaded_models=1)
    world.specs["lms"] = spec
    world.loaded["lms"] = {"a"}
    world.apply(world.sched.set_upstream(spec, world.now))
    world.observe()
    world.submit("c0", model="c")
    assert world.status_of("c0") == "waiting" and not world.loads  # "a" is busy: no cut
    world.finish("jit")
    assert world.unloads == [Unload("lms", "a", "make_room")]
    world.apply(world.sched.set_upstream(UpstreamSpec("second"), world.now))
    assert [u.name for u in world.sched.snapshot(world.now).upstreams] == ["lms", "second"]
