"""Upstreams drained or removed while requests wait: the core admits and loads nothing new
there, refuses at once the waiters that may go nowhere else (saying which upstream and why),
keeps the others for the upstreams that remain, and lets what runs there end normally."""

from __future__ import annotations

from dataclasses import replace

from lmgate.schedule import SchedulerConfig, UpstreamSpec
from lmgate.schedule.types import NO_UPSTREAM
from tests.schedule.world import World

A, B = frozenset({"a"}), frozenset({"b"})
BOTH = A | B


def _world() -> World:
    world = World(SchedulerConfig(default_slots=1), [UpstreamSpec("a"), UpstreamSpec("b")])
    world.preload("a", "m")
    world.preload("b", "m")
    world.submit("run-a", upstreams=A)
    world.submit("run-b", upstreams=B)
    world.submit("only-b", upstreams=B)
    world.submit("either", upstreams=BOTH)
    assert world.admitted() == ["run-a", "run-b"]
    assert world.waiting() == ["only-b", "either"]
    return world


def test_removing_an_upstream_refuses_its_waiters_and_keeps_the_others() -> None:
    world = _world()
    world.apply(world.sched.drop_upstream("b", world.now))
    assert world.status_of("only-b") == f"rejected 503 {NO_UPSTREAM}"
    assert "upstream 'b' was removed" in world.rejects[-1].message
    assert world.waiting() == ["either"]
    world.finish("run-b")  # what ran there ends normally; its slot there is given to nobody
    assert world.waiting() == ["either"]
    world.finish("run-a")
    assert world.status_of("either") == "admitted" and world.admits[-1].upstream == "a"
    world.submit("late", upstreams=B)  # a request still naming it is refused, saying why
    assert world.status_of("late") == f"rejected 503 {NO_UPSTREAM}"
    assert "draining or removed" in world.rejects[-1].message
    # Events about it that were under way when it went are ignored, never a crash.
    for late in (
        world.sched.load_finished("b", "m", world.now),
        world.sched.load_failed("b", "m", world.now, "gone"),
        world.sched.unloaded("b", "m", world.now),
        world.sched.observe("b", world.now, {"m": 1}),
        world.sched.drop_upstream("b", world.now),
    ):
        assert late == []
    assert set(world.sched.ups) == {"a"}


def test_draining_refuses_its_only_waiters_and_resuming_takes_new_ones() -> None:
    world = _world()
    drained = replace(world.sched.ups["b"].spec, draining=True)
    world.apply(world.sched.set_upstream(drained, world.now))
    assert world.status_of("only-b") == f"rejected 503 {NO_UPSTREAM}"
    assert "upstream 'b' is draining" in world.rejects[-1].message
    world.finish("run-b")  # a free slot on a draining upstream admits nobody
    assert world.status_of("either") == "waiting"
    world.apply(world.sched.set_upstream(replace(drained, draining=False), world.now))
    assert world.status_of("either") == "admitted" and world.admits[-1].upstream == "b"


def test_a_request_naming_no_upstream_ignores_draining() -> None:
    """One upstream (never several): requests name none, and a drain changes nothing here."""
    world = World(SchedulerConfig(default_slots=1))
    world.preload("lms", "m")
    spec = replace(world.sched.ups["lms"].spec, draining=True)
    world.apply(world.sched.set_upstream(spec, world.now))
    world.submit("r")
    assert world.admitted() == ["r"]
