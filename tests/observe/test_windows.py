"""Sliding windows on their own: percentile accuracy, expiry, per-dimension tallies."""

from __future__ import annotations

import math
import random

from hypothesis import given
from hypothesis import strategies as st

from lmgate.exchange import Exchange
from lmgate.observe.windows import Histogram, Metrics, ms


def test_quantiles_are_within_the_bucket_width() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(4, 1.2) for _ in range(5000)]
    hist = Histogram()
    for value in values:
        hist.add(value)
    ordered = sorted(values)
    for q in (0.5, 0.9, 0.99):
        exact = ordered[int(q * (len(ordered) - 1))]
        got = hist.quantile(q)
        assert got is not None and abs(got - exact) / exact < 0.05
    assert Histogram().quantile(0.5) is None


def _ex(*, model: str, status: int, latency: float, ttft: float | None = None) -> Exchange:
    ex = Exchange("r", "POST", "/v1/chat/completions", "127.0.0.1")
    ex.endpoint, ex.model, ex.key_name, ex.status = "chat", model, "k1", status
    ex.ttft_ms = ttft
    ex.tokens_in, ex.tokens_out = 10, 20
    ex.finish(latency)
    return ex


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_windows_expire_and_since_start_does_not() -> None:
    clock = Clock()
    metrics = Metrics(clock)
    for ex in (_ex(model="a", status=200, latency=100), _ex(model="b", status=500, latency=300)):
        metrics.on_start(ex)
        metrics.on_finish(ex)
    clock.now += 120  # two minutes later
    late = _ex(model="a", status=200, latency=1000, ttft=200)
    metrics.on_start(late)
    assert metrics.snapshot()["inFlight"] == 1
    metrics.on_finish(late)
    snap = metrics.snapshot()
    minute, quarter, ever = (snap["windows"][w] for w in ("1m", "15m", "sinceStart"))
    assert (minute["requests"], quarter["requests"], ever["requests"]) == (1, 3, 3)
    assert snap["requestsTotal"] == 3 and snap["errorsTotal"] == 1 and snap["inFlight"] == 0
    assert quarter["errors"] == 1 and abs(quarter["errorRate"] - 1 / 3) < 1e-3
    assert set(quarter["byModel"]) == {"a", "b"} and quarter["byModel"]["a"]["requests"] == 2
    assert set(quarter["byStatus"]) == {"200", "500"}
    assert quarter["byKey"]["k1"]["tokensOut"] == 60
    assert minute["ttftMs"]["p50"] is not None and quarter["byModel"]["b"]["ttftMs"]["p50"] is None
    assert minute["latencyMs"]["p50"] <= minute["latencyMs"]["p99"]
    # one stream: 20 tokens in the 800 ms after its first token
    assert minute["tokensPerSecond"] == 25.0
    clock.now += 1000
    assert metrics.snapshot()["windows"]["15m"]["requests"] == 0
    after = _ex(model="b", status=200, latency=50)  # its slot pushes the old ones out
    metrics.on_start(after)
    metrics.on_finish(after)
    assert len(metrics.windows.slots) == 1
    later = metrics.snapshot()["windows"]
    assert later["15m"]["requests"] == 1 and later["15m"]["byModel"]["b"]["requests"] == 1
    ever = later["sinceStart"]
    assert ever["requests"] == 4 and ever["errors"] == 1
    assert {m: t["requests"] for m, t in ever["byModel"].items()} == {"a": 2, "b": 2}
    assert {s: t["requests"] for s, t in ever["byStatus"].items()} == {"200": 3, "500": 1}
    assert ever["byKey"]["k1"]["tokensOut"] == 80 and ever["byEndpoint"]["chat"]["requests"] == 4
    assert ever["latencyMs"]["p99"] >= ever["latencyMs"]["p50"] > 0


def test_output_speed_is_worked_out_at_finish() -> None:
    ex = _ex(model="a", status=200, latency=2000, ttft=1000)
    assert (ex.decode_s, ex.tokens_per_second) == (1.0, 20.0)  # after the first token
    assert _ex(model="a", status=200, latency=2000).tokens_per_second == 10.0  # all of it
    late = _ex(model="a", status=200, latency=2000, ttft=3000)  # a first token after the end
    assert (late.decode_s, late.tokens_per_second) == (2.0, 10.0)
    ex = Exchange("r", "POST", "/v1/chat/completions", None)
    ex.finish(2000)
    assert (ex.latency_ms, ex.decode_s, ex.tokens_per_second) == (2000, None, None)
    ex.tokens_out = 0
    ex.finish(2000)
    assert (ex.decode_s, ex.tokens_per_second) == (2.0, None)  # no tokens: no speed


@given(st.floats(min_value=0, max_value=1e7))  # up to almost three hours
def test_ms_is_round_to_three_places(value: float) -> None:
    scaled = value * 1000
    if abs(scaled - math.floor(scaled) - 0.5) > 1e-4:
        assert ms(value) == round(value, 3)
    else:  # (nearly) a half: `round` reads the exact binary value, and may go the other way
        assert abs(ms(value) - round(value, 3)) <= 0.0011  # type: ignore[operator]


def test_ms_of_nothing_is_nothing() -> None:
    assert ms(None) is None
    assert ms(12.3456) == 12.346
    assert ms(0.0) == 0.0


def test_monitoring_requests_are_not_traffic() -> None:
    metrics = Metrics(Clock())
    probe = Exchange("r", "GET", "/debug/metrics", "127.0.0.1")
    metrics.on_start(probe)
    probe.path = "/debug/metrics"
    metrics.on_finish(probe)
    assert metrics.snapshot()["requestsTotal"] == 0
