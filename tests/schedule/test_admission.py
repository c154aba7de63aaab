"""Admission and the queue: slots, bounds, timeouts, cancellation, positions, no
head-of-line blocking across models, upstreams that cannot load."""

from __future__ import annotations

import pytest

from lmgate.schedule import ModelPolicy, Request, SchedulerConfig, UpstreamSpec
from tests.schedule.world import World


def test_admits_on_arrival_while_slots_are_free_then_queues() -> None:
    world = World(SchedulerConfig(default_slots=2))
    world.preload("lms", "m")
    for rid in ("a", "b", "c", "d"):
        world.submit(rid)
    assert world.admitted() == ["a", "b"]
    assert world.waiting() == ["c", "d"]
    world.now = 3.0
    world.finish("a")
    assert world.admitted() == ["a", "b", "c"]
    admit = world.admits[-1]
    assert admit.waited == 3.0 and admit.position == 1
    assert world.admits[0].waited == 0.0 and world.admits[0].position == 0


def test_slots_come_from_profile_then_parallel_then_defaults() -> None:
    world = World(
        SchedulerConfig(default_slots=3),
        [UpstreamSpec("lms"), UpstreamSpec("old", can_load=False, default_slots=1)],
        policies={"capped": ModelPolicy(slots=1)},
        slots={"wide": 6, "capped": 8},
    )
    world.preload("lms", "wide", "capped", "plain")
    for i in range(8):
        world.submit(f"w{i}", model="wide", upstreams=frozenset({"lms"}))
        world.submit(f"c{i}", model="capped", upstreams=frozenset({"lms"}))
        world.submit(f"p{i}", model="plain", upstreams=frozenset({"lms"}))
        world.submit(f"o{i}", model="jit", upstreams=frozenset({"old"}))
    counts = {m: sum(1 for a in world.admits if a.model == m) for m in ("wide", "capped")}
    assert counts == {"wide": 6, "capped": 1}
    assert sum(1 for a in world.admits if a.model == "plain") == 3
    assert sum(1 for a in world.admits if a.model == "jit") == 1  # upstream default
    views = {(v.upstream, v.model): v for v in world.sched.snapshot(world.now).models}
    assert views["lms", "wide"].slots == 6 and views["lms", "capped"].slots == 1


def test_a_full_queue_refuses_with_429_and_retry_after() -> None:
    world = World(SchedulerConfig(default_slots=1, queue_max=3))
    world.preload("lms", "m")
    for i in range(5):
        world.submit(f"r{i}", key="same")
    assert world.status_of("r0") == "admitted"
    assert world.waiting() == ["r1", "r2", "r3"]
    reject = world.rejects[0]
    assert (reject.request_id, reject.status, reject.code) == ("r4", 429, "queue_full")
    assert reject.retry_after is not None and reject.retry_after >= 1


def test_a_flooding_key_cannot_crowd_another_key_out_of_a_full_queue() -> None:
    world = World(SchedulerConfig(default_slots=1, queue_max=4))
    world.preload("lms", "m")
    for i in range(5):
        world.submit(f"a{i}", key="A")
    world.submit("b0", key="B")
    assert world.status_of("b0") == "waiting"
    assert world.status_of("a4") == "rejected 429 queue_full"  # A's last, not B's only one
    world.submit("b1", key="B")
    assert world.status_of("a3") == "rejected 429 queue_full"
    world.submit("b2", key="B")  # B now holds its fair half: the newcomer is the one refused
    assert world.status_of("b2") == "rejected 429 queue_full"
    assert len(world.waiting()) == 4


def test_waiting_too_long_is_a_503_and_next_deadline_says_when() -> None:
    world = World(SchedulerConfig(default_slots=1, queue_timeout=30.0))
    world.preload("lms", "m")
    world.submit("r0")
    world.now = 5.0
    world.submit("r1")
    assert world.sched.next_deadline(world.now) == 35.0
    world.advance(29.0)
    assert world.status_of("r1") == "waiting"
    world.advance(1.0)
    assert world.status_of("r1") == "rejected 503 queue_timeout"
    assert "waited 30 s" in world.rejects[0].message


def test_a_client_that_leaves_never_reaches_the_upstream() -> None:
    world = World(SchedulerConfig(default_slots=1))
    world.preload("lms", "m")
    world.submit("r0")
    world.submit("gone")
    world.submit("r2")
    world.cancel("gone")
    assert world.waiting() == ["r2"]
    world.finish("r0")
    assert world.admitted() == ["r0", "r2"]
    assert world.sched.cancel("gone", world.now) == []  # unknown now: nothing happens
    world.cancel("r2")  # a running request that is cancelled frees its slot
    world.submit("r3")
    assert world.status_of("r3") == "admitted"


def test_a_loaded_model_is_not_blocked_behind_a_model_that_needs_a_switch() -> None:
    world = World(SchedulerConfig(default_slots=1), [UpstreamSpec("lms", max_loaded_models=2)])
    world.preload("lms", "x", "y")
    world.submit("x0", model="x")
    world.submit("y0", model="y")
    world.submit("z0", model="z")  # needs a switch; both models are busy
    world.submit("y1", model="y")
    world.finish("y0")
    assert world.status_of("y1") == "admitted"
    assert world.status_of("z0") == "waiting"


def test_a_priority_class_goes_first() -> None:
    world = World(SchedulerConfig(default_slots=1))
    world.preload("lms", "m")
    world.submit("r0")
    for i in range(3):
        world.submit(f"low{i}", key="a")
    world.submit("high", key="admin", priority=1)
    world.finish("r0")
    assert world.admitted() == ["r0", "high"]


def test_positions_count_requests_for_the_same_model_and_eta_grows() -> None:
    world = World(
        SchedulerConfig(default_slots=2, service_estimate_s=4.0),
        [UpstreamSpec("lms", max_loaded_models=2)],
    )
    world.preload("lms", "m", "n")
    for i in range(6):
        world.submit(f"m{i}", model="m", key=f"k{i}")
    for i in range(3):
        world.submit(f"n{i}", model="n", key=f"k{i}")
    infos = [world.sched.position(f"m{i}", world.now) for i in range(2, 6)]
    assert [i.position for i in infos if i] == [1, 2, 3, 4]
    etas = [i.eta_ms for i in infos if i]
    assert etas == sorted(etas) and etas[0] == 2000 and etas[-1] == 8000
    n2 = world.sched.position("n2", world.now)
    assert n2 is not None and n2.position == 1
    assert world.sched.position("m0", world.now) is None  # running, not queued
    assert set(world.sched.positions(world.now)) == {"m2", "m3", "m4", "m5", "n2"}
    snap = world.sched.snapshot(world.now + 1.5)
    assert [(w.request_id, w.position, w.waited_ms) for w in snap.waiting][:2] == [
        ("m2", 1, 1500),
        ("m3", 2, 1500),
    ]


def test_an_upstream_without_load_api_serves_any_model_within_its_concurrency() -> None:
    world = World(
        SchedulerConfig(),
        [UpstreamSpec("old", can_load=False, default_slots=1, max_concurrent=1)],
    )
    world.submit("a0", key="A", model="one")
    for i in range(1, 4):
        world.submit(f"a{i}", key="A", model="two")
    world.submit("b0", key="B", model="three")
    assert world.admitted() == ["a0"]
    world.finish("a0")
    assert world.admitted() == ["a0", "a1"]
    world.finish("a1")
    assert world.admitted()[-1] == "b0"  # fair across models sharing the one slot
    assert not world.loads and not world.unloads


def test_requests_naming_unknown_upstreams_are_refused_and_ids_are_unique() -> None:
    world = World()
    world.preload("lms", "m")
    world.submit("r0", upstreams=frozenset({"elsewhere"}))
    assert world.status_of("r0") == "rejected 503 no_upstream"
    world.submit("r1")
    with pytest.raises(ValueError, match="already known"):
        world.sched.submit(Request("r1", "k", "m"), world.now)


def test_requests_refused_anyway_never_take_a_place_in_a_full_queue() -> None:
    world = World(
        SchedulerConfig(default_slots=1, queue_max=3),
        [UpstreamSpec("lms", memory_budget=1 << 40)],
        policies={"huge": ModelPolicy(size_bytes=1 << 50)},
    )
    world.preload("lms", "m")
    for i in range(4):
        world.submit(f"a{i}", key="A")
    for i in range(5):  # a key that may not load, asking for an unloaded model
        world.submit(f"g{i}", key="guest", model="other", may_load=False)
    world.submit("h", key="B", model="huge")
    assert world.waiting() == ["a1", "a2", "a3"]
    assert {world.status_of(f"g{i}") for i in range(5)} == {"rejected 409 load_denied"}
    assert world.status_of("h") == "rejected 503 model_too_large"
