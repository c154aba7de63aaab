"""Request figures over sliding windows (last minute, last 15 minutes) and since start: the
windowed half of `/debug/metrics` (counts, error rates, latency and TTFT percentiles, tokens
and tokens/s, per endpoint, model, key and status). The figures derived from one exchange
are computed here for events, Prometheus and logs alike.

Recording is O(1): each finished exchange lands in the current time slot, in the one tally of
its endpoint, model, key and status together. Percentiles come from log-scaled
histograms (about 2 % relative error), so a slot's size does not grow with its traffic.
Queries merge the slots of a window; they run only when someone asks. Model names come from
clients: they are tallied under the name the gateway's `ModelNames` gives them (`other` past
its cap), so neither the slots nor the since-start summary grow with the names clients invent.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lmgate.errors import GatewayError
from lmgate.exchange import Exchange
from lmgate.guard.paths import normalise
from lmgate.observe.cardinality import ModelNames

# Monitoring and probes are not traffic: they stay out of request counts and percentiles.
QUIET_PREFIXES = ("/health", "/ready", "/debug", "/metrics", "/dashboard")
_ROUTE_FAMILIES = ("/admin", "/debug", "/api/v0", "/api/v1", "/v1")


def is_quiet(ex: Exchange) -> bool:
    """Decided once, at the start, before the guard has normalised the path: so on the path
    as the guard will normalise it, or `/health/../v1/chat/completions` would be an inference
    request hidden from the request list, the figures and cancelling."""
    quiet = ex.attributes.get("quiet")
    if quiet is None:
        try:
            path = normalise(ex.path).lower()
        except GatewayError:
            path = ""  # refused by the guard anyway: counted as the failure it is
        quiet = ex.attributes["quiet"] = path.startswith(QUIET_PREFIXES)
    return bool(quiet)


def route_label(ex: Exchange) -> str:
    """A low-cardinality label: the inference kind, or the route family."""
    if ex.endpoint:
        return ex.endpoint
    for family in _ROUTE_FAMILIES:
        if ex.path.startswith(family):
            return family.strip("/")
    return "other"


def ms(value: float | None) -> float | None:
    """Milliseconds to three places. For the finite, non-negative figures here this is
    `round(value, 3)` (to within the last bit of a half), at a third of its cost: `round`
    writes the number out as text and reads it back, and a request reports several."""
    return int(value * 1000.0 + 0.5) / 1000.0 if value is not None else None


_GROWTH = math.log(1.04)
_FLOOR_MS = 0.01
DIMENSIONS = ("endpoint", "model", "key", "status")
Dims = tuple[str, str, str, str]  # a value for each


def bucket_of(value: float) -> int:
    return int(math.log(max(value, _FLOOR_MS) / _FLOOR_MS) / _GROWTH)


class Histogram:
    """Counts per log-scaled bucket; `quantile` answers within the bucket's ~4 % width."""

    __slots__ = ("counts", "n")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0

    def add(self, value: float) -> None:
        self.add_index(bucket_of(value))

    def add_index(self, index: int) -> None:
        self.counts[index] = self.counts.get(index, 0) + 1
        self.n += 1

    def merge(self, other: Histogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.n += other.n

    def quantile(self, q: float) -> float | None:
        if not self.n:
            return None
        rank = q * (self.n - 1)
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen > rank:
                return round(_FLOOR_MS * math.exp((index + 0.5) * _GROWTH), 3)
        return None  # pragma: no cover - the counts always add up to n

    def summary(self) -> dict[str, float | None]:
        return {"p50": self.quantile(0.5), "p90": self.quantile(0.9), "p99": self.quantile(0.99)}


@dataclass(slots=True)
class Sample:
    """What a tally needs from one finished exchange."""

    dims: Dims  # endpoint, model, key, status
    failed: bool
    latency_bucket: int  # the histogram bucket
    ttft_bucket: int | None
    tokens_in: int | None
    tokens_out: int | None
    decode_s: float | None  # generation time the output tokens took


@dataclass(slots=True)
class Tally:
    requests: int = 0
    errors: int = 0
    latency: Histogram = field(default_factory=Histogram)
    ttft: Histogram = field(default_factory=Histogram)
    tokens_in: int = 0
    tokens_out: int = 0
    timed_tokens: int = 0  # output tokens whose generation time is known
    decode_s: float = 0.0

    def add(self, s: Sample) -> None:
        self.requests += 1
        self.errors += s.failed
        self.latency.add_index(s.latency_bucket)
        if s.ttft_bucket is not None:
            self.ttft.add_index(s.ttft_bucket)
        if s.tokens_in:
            self.tokens_in += s.tokens_in
        if s.tokens_out:
            self.tokens_out += s.tokens_out
            if s.decode_s:
                self.timed_tokens += s.tokens_out
                self.decode_s += s.decode_s

    def merge(self, other: Tally) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency.merge(other.latency)
        self.ttft.merge(other.ttft)
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.timed_tokens += other.timed_tokens
        self.decode_s += other.decode_s

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "errorRate": round(self.errors / self.requests, 4) if self.requests else 0.0,
            "latencyMs": self.latency.summary(),
            "ttftMs": self.ttft.summary(),
            "tokensIn": self.tokens_in,
            "tokensOut": self.tokens_out,
            "tokensPerSecond": (
                round(self.timed_tokens / self.decode_s, 2) if self.decode_s > 0 else None
            ),
        }


@dataclass(slots=True)
class Slot:
    """One time slot: a tally per combination of endpoint, model, key and status, so a
    request updates one tally, not five. Totals and per-dimension tallies are summed from
    these when someone asks (see `Summary`)."""

    start: float
    combos: dict[Dims, Tally] = field(default_factory=dict)

    def add(self, s: Sample) -> None:
        tally = self.combos.get(s.dims)
        if tally is None:
            tally = self.combos[s.dims] = Tally()
        tally.add(s)


@dataclass(slots=True)
class Summary:
    """Slots summed up: the whole, and a tally per value of each dimension."""

    total: Tally = field(default_factory=Tally)
    by: dict[str, dict[str, Tally]] = field(
        default_factory=lambda: {name: {} for name in DIMENSIONS}
    )

    def add_slot(self, slot: Slot) -> None:
        for dims, tally in slot.combos.items():
            self.total.merge(tally)
            for name, value in zip(DIMENSIONS, dims, strict=True):
                mine = self.by[name].get(value)
                if mine is None:
                    mine = self.by[name][value] = Tally()
                mine.merge(tally)

    def merge(self, other: Summary) -> None:
        self.total.merge(other.total)
        for name, tallies in other.by.items():
            mine = self.by[name]
            for value, tally in tallies.items():
                mine.setdefault(value, Tally()).merge(tally)

    def as_json(self, seconds: float) -> dict[str, Any]:
        out = self.total.as_json()
        out["seconds"] = round(seconds, 3)
        out["requestsPerSecond"] = round(self.total.requests / seconds, 3) if seconds else 0.0
        for name, tallies in self.by.items():
            key = "by" + name.capitalize()
            out[key] = {value: tally.as_json() for value, tally in sorted(tallies.items())}
        return out


class Windows:
    """Slots of `slot_s` seconds kept for `keep_s`. A slot that expires is summed into
    `older`, so "since start" is `older` plus the slots still kept, summed when asked: each
    sample is tallied once, on the request path, and summed later, off it. `older` keeps
    the per-dimension shape, whose size is the sum of the dimensions' values, not their
    product."""

    def __init__(self, *, slot_s: float = 5.0, keep_s: float = 900.0) -> None:
        self.slot_s = slot_s
        self.keep_s = keep_s
        self.slots: deque[Slot] = deque()
        self.older = Summary()

    def add(self, sample: Sample, now: float) -> None:
        if not self.slots or now >= self.slots[-1].start + self.slot_s:
            self.slots.append(Slot(now - now % self.slot_s))
            while self.slots[0].start < now - self.keep_s - self.slot_s:
                self.older.add_slot(self.slots.popleft())
        self.slots[-1].add(sample)

    @property
    def forever(self) -> Summary:
        merged = Summary()
        merged.merge(self.older)
        for slot in self.slots:
            merged.add_slot(slot)
        return merged

    def window(self, seconds: float, now: float) -> Summary:
        merged = Summary()
        for slot in self.slots:
            if slot.start + self.slot_s > now - seconds:
                merged.add_slot(slot)
        return merged


def sample_of(ex: Exchange, models: ModelNames) -> Sample:
    return Sample(
        dims=(route_label(ex), models(ex.model) or "-", ex.key_name or "-", str(ex.status)),
        failed=ex.failed,
        latency_bucket=bucket_of(ex.latency_ms),
        ttft_bucket=bucket_of(ex.ttft_ms) if ex.ttft_ms is not None else None,
        tokens_in=ex.tokens_in,
        tokens_out=ex.tokens_out,
        decode_s=ex.decode_s,
    )


WINDOWS = (("1m", 60.0), ("15m", 900.0))


class Metrics:
    def __init__(
        self, clock: Callable[[], float] = time.time, *, models: ModelNames | None = None
    ) -> None:
        self.clock = clock
        self.models = models or ModelNames()
        self.started = clock()
        self.windows = Windows(keep_s=max(seconds for _, seconds in WINDOWS))
        self.in_flight: dict[str, int] = {}

    def on_start(self, ex: Exchange) -> None:
        if not is_quiet(ex):
            label = route_label(ex)
            ex.attributes["in_flight_as"] = label
            self.in_flight[label] = self.in_flight.get(label, 0) + 1

    def on_finish(self, ex: Exchange) -> None:
        if is_quiet(ex):
            return
        label = ex.attributes.get("in_flight_as")
        if isinstance(label, str):
            self.in_flight[label] -= 1
        self.windows.add(sample_of(ex, self.models), self.clock())

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        uptime = now - self.started
        forever = self.windows.forever
        windows = {
            name: self.windows.window(seconds, now).as_json(min(seconds, uptime))
            for name, seconds in WINDOWS
        }
        windows["sinceStart"] = forever.as_json(uptime)
        return {
            "uptimeSeconds": round(uptime, 3),
            "requestsTotal": forever.total.requests,
            "errorsTotal": forever.total.errors,
            "errorRate": windows["sinceStart"]["errorRate"],
            "inFlight": sum(self.in_flight.values()),
            "inFlightByRoute": {k: v for k, v in sorted(self.in_flight.items()) if v},
            "windows": windows,
        }
