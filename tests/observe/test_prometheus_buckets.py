"""Histograms observed by bucket search, and counters added to directly, expose exactly what
prometheus-client's own `observe` and `inc` would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.values import MutexValue

from lmgate.observe.prometheus import _adder, _counting, _observing, _Unlocked

BOUNDS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)
VALUES = [0.0, 0.5, 1, 1.0000001, 2, 4.99, 5, 77, 1000, 1000.5, 1e9, 3, 3, 150, float("nan")]


def _exposition(fast: bool) -> bytes:
    registry = CollectorRegistry()
    histogram = Histogram("h", "h", ["model"], buckets=BOUNDS, registry=registry)
    child = histogram.labels("m")
    observe = _observing(child).observe if fast else child.observe
    for value in VALUES:
        observe(value)
    return b"\n".join(
        line for line in generate_latest(registry).splitlines() if b"_created" not in line
    )


def test_bucket_search_matches_the_library() -> None:
    assert _exposition(fast=True) == _exposition(fast=False)
    assert b'h_bucket{le="1.0",model="m"} 3.0' in _exposition(fast=True)


def test_counters_are_added_to_as_the_library_adds() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", ["model"], registry=registry)
    fast, usual = _counting(counter.labels("fast")), counter.labels("usual")
    for amount in (1, 20, 0.5):
        fast.inc(amount)
        usual.inc(amount)
    fast.inc(1)  # the amount is always given: a multiprocess value has no default
    usual.inc()
    text = generate_latest(registry)
    assert b'c_total{model="fast"} 22.5' in text and b'c_total{model="usual"} 22.5' in text


def test_a_child_without_the_expected_parts_is_used_itself() -> None:
    class Plain:
        pass

    plain = Plain()
    assert _observing(plain) is plain and _counting(plain) is plain


def test_only_the_in_process_value_is_added_to_without_its_lock() -> None:
    counter = Counter("d", "d", ["model"], registry=CollectorRegistry())
    value = counter.labels("m")._value
    assert type(value) is MutexValue and isinstance(_adder(value), _Unlocked)

    class OtherValue:  # e.g. a multiprocess value, which writes to its file under its lock
        def inc(self, amount: float) -> None:
            self.added = amount

    other = OtherValue()
    assert _adder(other) is other
