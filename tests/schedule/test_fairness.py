"""Weighted fair order between keys: a flood cannot push another key's single request behind
all of its own, backlogged keys share by weight, and the queue forgets what it no longer holds.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmgate.schedule import Request, SchedulerConfig
from lmgate.schedule.fairness import FairQueue
from tests.schedule.world import World


def test_a_single_request_waits_behind_at_most_one_request_of_a_flooding_key() -> None:
    world = World(SchedulerConfig(default_slots=4, queue_max=100))
    world.preload("lms", "m")
    for i in range(54):
        world.submit(f"a{i}", key="A")
    world.submit("b", key="B")
    ahead = 0
    while world.status_of("b") == "waiting":
        world.finish(next(iter(world.running)))
        ahead += world.admits[-1].request_id != "b"
    assert ahead <= 1


@settings(max_examples=200, deadline=None)
@given(
    slots=st.integers(1, 6),
    floods=st.lists(st.tuples(st.integers(1, 60), st.floats(0.1, 10.0)), min_size=1, max_size=4),
    weight=st.floats(0.1, 10.0),
    served_before=st.integers(0, 30),
    order=st.randoms(use_true_random=False),
)
def test_a_newcomer_is_admitted_within_one_turn_of_every_backlogged_key(
    slots: int,
    floods: list[tuple[int, float]],
    weight: float,
    served_before: int,
    order: object,
) -> None:
    """Whatever the flood sizes, weights and completion order, a key arriving with nothing
    queued sees at most one request of each other key admitted before its own."""
    import random

    assert isinstance(order, random.Random)
    world = World(SchedulerConfig(default_slots=slots, queue_max=1000))
    world.preload("lms", "m")
    for k, (count, w) in enumerate(floods):
        for i in range(count):
            world.submit(f"f{k}-{i}", key=f"F{k}", weight=w)
    for _ in range(min(served_before, len(world.running))):
        world.finish(order.choice(sorted(world.running)))
    world.submit("new", key="N", weight=weight)
    ahead: dict[str, int] = {}
    while world.status_of("new") == "waiting":
        world.finish(order.choice(sorted(world.running)))
        last = world.admits[-1]
        if last.request_id != "new":
            key = world.submitted[last.request_id].key
            ahead[key] = ahead.get(key, 0) + 1
    assert all(n <= 1 for n in ahead.values()), ahead


@settings(max_examples=100, deadline=None)
@given(wa=st.integers(1, 5), wb=st.integers(1, 5), slots=st.integers(1, 4))
def test_backlogged_keys_share_by_weight(wa: int, wb: int, slots: int) -> None:
    world = World(SchedulerConfig(default_slots=slots, queue_max=1000))
    world.preload("lms", "m")
    for i in range(200):
        world.submit(f"a{i}", key="A", weight=float(wa))
        world.submit(f"b{i}", key="B", weight=float(wb))
    start = len(world.admits)
    for _ in range(10 * (wa + wb)):
        world.finish(next(iter(world.running)))
    got = [world.submitted[a.request_id].key for a in world.admits[start:]]
    share_a = got.count("A") / len(got)
    assert abs(share_a - wa / (wa + wb)) <= 2 / len(got) + 1e-9


def test_a_key_with_nothing_queued_starts_fresh_and_state_stays_bounded() -> None:
    queue = FairQueue()
    for i in range(10):
        queue.push(Request(f"a{i}", "A", "m"), 0.0)
    queue.push(Request("b0", "B", "m"), 0.0)
    assert [w.request.id for w in queue.in_order()][:3] == ["a0", "b0", "a1"]
    for i in range(10):
        queue.remove(f"a{i}")  # A leaves (its clients went away): no debt is kept
    queue.remove("b0")
    assert len(queue) == 0 and not queue._finish and not queue._per_key
    queue.push(Request("a-again", "A", "m"), 1.0)
    queue.push(Request("b1", "B", "m"), 1.0)
    assert [w.request.id for w in queue.in_order()] == ["a-again", "b1"]
    for i in range(1000):  # ids reused and removed mid-heap never leave stale tags behind
        queue.push(Request(f"x{i % 3}", "X", "m"), 2.0)
        queue.remove(f"x{i % 3}")
    assert len(queue._starts) < 200 and queue.virtual_time() == queue.entries["a-again"].order[1]


def test_a_light_key_is_next_whatever_other_keys_have_queued() -> None:
    """One slot, three flooding keys: a key asking once in a while waits only for the slot to
    free (one service time), each time it asks."""
    world = World(SchedulerConfig(default_slots=1, queue_max=1000))
    world.preload("lms", "m")
    for k in range(3):
        for i in range(40):
            world.submit(f"f{k}-{i}", key=f"F{k}")
    for turn in range(5):
        for _ in range(4):  # time passes: the floods are served a while
            world.finish(next(iter(world.running)))
        world.submit(f"light{turn}", key="L")
        world.finish(next(iter(world.running)))
        assert world.admits[-1].request_id == f"light{turn}"
        world.finish(f"light{turn}")


@pytest.mark.parametrize("keys", [1, 3, 5])
def test_a_key_that_asks_again_at_once_gets_its_share_not_more(keys: int) -> None:
    """One request outstanding, sent again as soon as it is answered: a backlogged key like the
    others, so it gets about 1/(keys + 1) of the slot."""
    world = World(SchedulerConfig(default_slots=1, queue_max=5000))
    world.preload("lms", "m")
    for k in range(keys):
        for i in range(400):
            world.submit(f"f{k}-{i}", key=f"F{k}")
    world.submit("loop0", key="L")
    sent = 1
    start = len(world.admits)
    for _ in range(40 * (keys + 1)):
        running = next(iter(world.running))
        world.finish(running)
        if running.startswith("loop"):
            world.submit(f"loop{sent}", key="L")
            sent += 1
    got = [world.submitted[a.request_id].key for a in world.admits[start:]]
    share = got.count("L") / len(got)
    assert abs(share - 1 / (keys + 1)) <= 0.05, share
