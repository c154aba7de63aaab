"""The event bus on its own: filters, bounded queues with loss counts, resume, request ids."""

from __future__ import annotations

import asyncio

import orjson

from lmgate.observe.events import CURRENT_REQUEST, Event, EventBus, EventFilter


def _types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


async def test_type_globs_and_model_filter() -> None:
    bus = EventBus()
    sub = bus.subscribe(types=["inference_complete", "model_*"], model="m1")
    bus.publish("inference_start", model="m1")
    bus.publish("inference_complete", model="m2")
    bus.publish("inference_complete", model="m1")
    bus.publish("model_loaded", modelKey="m1")
    bus.publish("model_loaded", modelKey="m2")
    bus.publish("upstream_state", reachable=True)  # names no model: filtered out
    batch, lost = await sub.take()
    assert _types(batch) == ["inference_complete", "model_loaded"] and lost == 0
    assert EventFilter(["model_*"])(bus.recent(10)[3])
    assert not EventFilter(["model"])(bus.recent(10)[3])


async def test_a_subscriber_too_far_behind_skips_to_the_newest_and_is_told_once() -> None:
    bus = EventBus(queue_size=3)
    slow, other = bus.subscribe(), bus.subscribe()
    for i in range(10):
        bus.publish("tick", n=i)
    assert bus.dropped == 14 and bus.published == 10  # 7 each, known before they read
    batch, lost = await slow.take()
    assert [e.data["n"] for e in batch] == [7, 8, 9] and lost == 7
    bus.unsubscribe(other)
    assert bus.dropped == 14  # a counter: what `other` missed stays counted
    bus.publish("tick", n=10)
    batch, lost = await slow.take()
    assert [e.data["n"] for e in batch] == [10] and lost == 0


async def test_take_waits_for_an_event() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    waiting = asyncio.create_task(sub.take())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    bus.publish("late")
    batch, _ = await asyncio.wait_for(waiting, 1)
    assert _types(batch) == ["late"]


async def test_resume_replays_after_the_id_and_reports_what_fell_out() -> None:
    bus = EventBus(history=5, queue_size=100)
    for i in range(1, 9):
        bus.publish("tick", n=i)
    # ids 4..8 are buffered; a client that saw id 2 missed id 3 for good
    sub = bus.subscribe(after_id=2)
    batch, lost = await sub.take()
    assert [e.id for e in batch] == [4, 5, 6, 7, 8] and lost == 1
    sub = bus.subscribe(after_id=6, types=["tick"])
    batch, lost = await sub.take()
    assert [e.id for e in batch] == [7, 8] and lost == 0


async def test_resume_after_a_restart_replays_everything_buffered() -> None:
    bus = EventBus()
    for _ in range(3):
        bus.publish("tick")
    batch, lost = await bus.subscribe(after_id=5000).take()
    assert [e.id for e in batch] == [1, 2, 3] and lost == 0


async def test_resume_backlog_larger_than_the_queue_keeps_the_newest() -> None:
    bus = EventBus(history=100, queue_size=4)
    for _ in range(10):
        bus.publish("tick")
    batch, lost = await bus.subscribe(after_id=0).take()
    assert [e.id for e in batch] == [7, 8, 9, 10] and lost == 6


async def test_events_carry_the_running_request_id() -> None:
    bus = EventBus()

    async def serve() -> None:
        CURRENT_REQUEST.set("req-42")
        bus.publish("model_load_start", modelKey="m")

    await asyncio.create_task(serve())
    bus.publish("config_changed")
    first, second = bus.recent(2)
    assert first.as_json()["requestId"] == "req-42"
    assert second.as_json()["requestId"] is None
    assert first.frame().startswith(b"id: 1\nevent: model_load_start\ndata: {")
    assert first.frame() is first.frame()  # encoded once


def test_batches_are_encoded_once_for_subscribers_that_take_the_same_events() -> None:
    bus = EventBus()
    events = [bus.publish("inference_start", n=i) for i in range(5)]
    whole = bus.encode(events)
    assert whole == b"".join(e.frame() for e in events)
    assert bus.encode(list(events)) is whole  # the same run of events: one join, shared
    # filtered batches with gaps are joined on their own, even with the same first and last id
    odd, even_ends = [events[0], events[2], events[4]], [events[0], events[3], events[4]]
    assert bus.encode(odd) == b"".join(e.frame() for e in odd)
    assert bus.encode(even_ends) == b"".join(e.frame() for e in even_ends)
    assert bus.encode([]) == b""


def test_a_frame_is_the_event_as_json_whatever_its_data() -> None:
    bus = EventBus()
    plain = bus.publish("inference_complete", model="m1", tokensOut=3, ratio=0.5, error=None)
    shadowing = bus.publish("lmstudio_log", timestamp="2026-12-01 10:00:00", type="x")
    for event in (plain, shadowing):
        head, payload = event.frame().split(b"data: ", 1)
        assert head == b"id: %d\nevent: %s\n" % (event.id, event.type.encode())
        assert payload.endswith(b"\n\n") and payload.count(b"\n") == 2
        assert orjson.loads(payload) == event.as_json()
    assert orjson.loads(shadowing.frame().split(b"data: ", 1)[1])["timestamp"] == (
        "2026-12-01 10:00:00"
    )


def test_since_gives_the_events_after_a_cursor_oldest_first() -> None:
    bus = EventBus(history=50, queue_size=50)
    for n in range(80):  # the ring keeps ids 31-80
        bus.publish("tick", n=n)
    assert [e.id for e in bus.since(70, limit=50)[0]] == list(range(71, 81))
    assert bus.since(10, limit=50) == (bus.recent(50), 20)  # 11-30 fell out of the ring
    batch, skipped = bus.since(40, limit=5)  # at most the 5 newest
    assert [e.id for e in batch] == [76, 77, 78, 79, 80] and skipped == 35
    assert bus.since(80, limit=50) == ([], 0)


async def test_lingering_subscribers_wake_on_one_tick_and_take_the_same_batch() -> None:
    bus = EventBus()
    first, second = bus.subscribe(), bus.subscribe()
    loop = asyncio.get_running_loop()
    linger = 0.5
    await asyncio.sleep(linger - loop.time() % linger + 0.05)  # just past a tick
    takes = [asyncio.create_task(sub.take(linger)) for sub in (first, second)]
    bus.publish("one")
    await asyncio.sleep(0.05)
    assert not any(take.done() for take in takes)  # the burst is gathered, not sent
    bus.publish("two")
    (a, lost_a), (b, lost_b) = await asyncio.gather(*takes)
    assert _types(a) == _types(b) == ["one", "two"] and lost_a == lost_b == 0
    assert loop.time() % linger < 0.2  # woken on the tick, not when the events came
    assert bus.encode(a) is bus.encode(b)
