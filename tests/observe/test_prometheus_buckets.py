"""Histograms observed by bucket search expose exactly what prometheus-client's own
`observe` would, for values on, between and beyond the bounds."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from lmgate.observe.prometheus import _Observer

BOUNDS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)
VALUES = [0.0, 0.5, 1, 1.0000001, 2, 4.99, 5, 77, 1000, 1000.5, 1e9, 3, 3, 150]


def _exposition(fast: bool) -> bytes:
    registry = CollectorRegistry()
    histogram = Histogram("h", "h", ["model"], buckets=BOUNDS, registry=registry)
    child = histogram.labels("m")
    observe = _Observer(child).observe if fast else child.observe
    for value in VALUES:
        observe(value)
    return b"\n".join(
        line for line in generate_latest(registry).splitlines() if b"_created" not in line
    )


def test_bucket_search_matches_the_library() -> None:
    assert _exposition(fast=True) == _exposition(fast=False)
    assert b'h_bucket{le="1.0",model="m"} 3.0' in _exposition(fast=True)


def test_a_child_without_the_expected_parts_is_observed_the_usual_way() -> None:
    class Plain:
        seen: list[float] = []

        def observe(self, value: float) -> None:
            self.seen.append(value)

    plain = Plain()
    _Observer(plain).observe(2.5)
    assert plain.seen == [2.5]
