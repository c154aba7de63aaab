"""An alias that names a different key on each upstream: the core places it by each upstream's
own key (slots, queue, loads), and the wire between workers carries the keys."""

from __future__ import annotations

from lmgate.schedule import wire
from lmgate.schedule.core import Scheduler
from lmgate.schedule.types import Admit, Load, Request, SchedulerConfig, UpstreamSpec

KEYS = {"a": "alpha/qwen3-4b", "b": "beta/qwen3-4b-instruct"}
BOTH = frozenset(KEYS)


def _alias(rid: str, key: str = "k") -> Request:
    return Request(rid, key, "qwen-small", upstreams=BOTH, keys=dict(KEYS))


def _core(*, loaded: bool = True) -> Scheduler:
    core = Scheduler(SchedulerConfig(default_slots=1), [UpstreamSpec("a"), UpstreamSpec("b")])
    if loaded:
        core.observe("a", 0.0, {KEYS["a"]: 1, "alpha/other": 1})
        core.observe("b", 0.0, {KEYS["b"]: 1})
    return core


def _admits(actions: list[object]) -> list[Admit]:
    return [a for a in actions if isinstance(a, Admit)]


def test_an_alias_fills_each_upstreams_own_key_then_waits_for_the_first_free() -> None:
    core = _core()
    (first,) = _admits(core.submit(_alias("1"), 1.0))
    (second,) = _admits(core.submit(_alias("2"), 1.0))
    assert {first.upstream, second.upstream} == {"a", "b"}
    for admit in (first, second):
        assert admit.model == KEYS[admit.upstream]
    assert core.submit(_alias("3"), 1.0) == []  # both slots taken: it waits
    assert core.queue.keyed == {KEYS["a"]: 1, KEYS["b"]: 1}
    snap = {(m.upstream, m.model): m.waiting for m in core.snapshot(1.5).models}
    assert snap[("a", KEYS["a"])] == 1 and snap[("b", KEYS["b"])] == 1
    freed = second.upstream
    (third,) = _admits(core.finish("2", 2.0))
    assert third.request_id == "3" and third.upstream == freed
    assert third.model == KEYS[freed]
    assert core.queue.keyed == {}
    # The other model on a is not what the alias waits for: its slot frees nothing for it.
    assert (
        core.ups["a"].residents[KEYS["a"]].in_flight + core.ups["b"].residents[KEYS["b"]].in_flight
        == 2
    )


def test_a_direct_request_for_one_key_shares_its_slot_with_the_alias() -> None:
    core = _core()
    direct = Request("d", "k", KEYS["a"], upstreams=frozenset({"a"}))
    (admit,) = _admits(core.submit(direct, 1.0))
    assert admit.upstream == "a"
    (alias,) = _admits(core.submit(_alias("1"), 1.0))
    assert (alias.upstream, alias.model) == ("b", KEYS["b"])  # a's one slot is taken


def test_an_alias_loaded_nowhere_is_loaded_by_the_chosen_upstreams_own_key() -> None:
    core = _core(loaded=False)
    actions = core.submit(_alias("1"), 1.0)
    (load,) = [a for a in actions if isinstance(a, Load)]
    assert load.model == KEYS[load.upstream]
    after = _admits(core.load_finished(load.upstream, load.model, 3.0, 1))
    assert [(a.request_id, a.upstream, a.model) for a in after] == [
        ("1", load.upstream, KEYS[load.upstream])
    ]


def test_a_slot_freed_on_a_key_still_busy_lets_the_waiting_alias_in() -> None:
    core = Scheduler(SchedulerConfig(default_slots=1), [UpstreamSpec("a"), UpstreamSpec("b")])
    core.observe("a", 0.0, {KEYS["a"]: 2})
    core.observe("b", 0.0, {KEYS["b"]: 1})
    placed = [_admits(core.submit(_alias(str(n)), 1.0))[0] for n in range(3)]
    assert sorted(a.upstream for a in placed) == ["a", "a", "b"]
    assert core.submit(_alias("w"), 1.0) == []
    on_a = next(a for a in placed if a.upstream == "a")
    (admit,) = _admits(core.finish(on_a.request_id, 2.0))  # a's key still runs one answer
    assert (admit.request_id, admit.upstream, admit.model) == ("w", "a", KEYS["a"])


def test_the_wire_carries_the_keys() -> None:
    request = _alias("7")
    sent = wire.request_out(request)
    assert sent["keys"] == KEYS and sent["upstreams"] == ["a", "b"]
    back = wire.request_in(sent)
    assert back == request and back.key_on("b") == KEYS["b"]
    plain = Request("8", "k", "m")
    assert wire.request_in(wire.request_out(plain)).keys is None
    for bad in ({"a": 1}, ["a"], "a"):
        try:
            wire.request_in({**sent, "keys": bad})
        except wire.WireError:
            continue
        raise AssertionError(f"accepted keys {bad!r}")
