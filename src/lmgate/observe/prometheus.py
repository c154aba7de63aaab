"""Prometheus metrics (`lmgate_` prefix), one registry per app so tests can run several.

Request metrics are updated as exchanges finish; gauges that describe a state (subscribers,
upstream health, pending usage rows) are read when scraped, by `StateCollector`. Model names
come from clients: which of them get series of their own is decided by the gateway's
`ModelNames` (the rest are counted as `other`), so the series count stays bounded. Key names
are the operator's; they too keep at most `MAX_VALUES` distinct values.

With several workers (`multiprocess=True`, `PROMETHEUS_MULTIPROC_DIR` set before the worker
started) every worker writes its series to memory-mapped files and a scrape, whichever worker
serves it, adds them all up (`MultiProcessCollector`): counters and histograms are totals
across workers, in-flight is the sum over live workers, upstream health the latest probe.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.values import MutexValue

from lmgate.errors import GatewayError
from lmgate.exchange import Exchange
from lmgate.guard.paths import normalise
from lmgate.observe.cardinality import ModelNames
from lmgate.observe.windows import is_quiet, route_label

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TPS_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)
MAX_VALUES = 100

__all__ = ["PrometheusMetrics", "StateCollector", "route_label"]


class _Bounded:
    """A label whose distinct values are capped."""

    def __init__(self, limit: int = MAX_VALUES) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        value = value or "-"
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return "other"
        self.seen.add(value)
        return value


class _Unlocked:
    """One of prometheus-client's in-process values, added to without taking its lock.

    The lock guards against other threads, and lmgate updates metrics from the event loop's
    thread alone (a scrape only reads, and reading a float needs no lock). Taking and
    releasing it was most of what an update cost: about 3,100 instructions against 800."""

    __slots__ = ("value",)

    def __init__(self, value: MutexValue) -> None:
        self.value = value

    def inc(self, amount: float) -> None:
        self.value._value += amount


def _adder(value: Any) -> Any:
    """Something to call `inc(amount)` on (the amount always given) that adds to `value`: the
    value itself unless it is prometheus-client's in-process kind (a multiprocess value
    writes to its file, under its lock)."""
    return _Unlocked(value) if type(value) is MutexValue else value


class _Bisect:
    """A histogram child's bucket found by binary search; see `_observing`."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, bounds: list[float], buckets: list[Any], sum_: Any) -> None:
        self.bounds = bounds
        self.buckets = [_adder(bucket) for bucket in buckets]
        self.sum = _adder(sum_)

    def observe(self, value: float) -> None:
        if value == value:  # NaN lands in no bucket, as with `observe`
            self.buckets[bisect_left(self.bounds, value)].inc(1)
        self.sum.inc(value)


def _observing(child: Any) -> Any:
    """What to call `observe` on for a labelled histogram child.

    prometheus-client's `observe` walks the bounds one by one, checking each in Python; a
    tokens/s value walks most of them. `_Bisect` finds the bucket in C and adds to the same
    values (the child's bucket and sum), so exposition and multiprocess files are unchanged.
    A child without those parts is observed itself."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    sum_ = getattr(child, "_sum", None)
    if bounds and buckets and sum_ is not None and len(bounds) == len(buckets):
        if bounds[-1] == float("inf"):
            return _Bisect(bounds, buckets, sum_)
    return child


def _counting(child: Any) -> Any:
    """What to call `inc` on for a labelled counter child: its value, since the child's `inc`
    checks on every call what holds for every call here (a child, an amount >= 0). A child
    without that value is counted itself."""
    value = getattr(child, "_value", None)
    return _adder(value) if callable(getattr(value, "inc", None)) else child


class _RouteSeries:
    __slots__ = ("duration", "errors", "requests")

    def __init__(self, m: PrometheusMetrics, route: str, status: str) -> None:
        self.requests = _counting(m.requests.labels(route, status))
        self.duration = _observing(m.duration.labels(route))
        self.errors = _counting(m.errors.labels(route))


class _InferenceSeries:
    """The children one kind of inference request updates. Those a request may leave alone
    (time to first token, tokens, tokens/s) are made when first used: an answer that failed,
    the kind a client can ask for under any number of model names, adds two series to a
    scrape rather than six."""

    __slots__ = (
        "duration",
        "endpoint",
        "key",
        "metrics",
        "model",
        "requests",
        "tokens_in",
        "tokens_out",
        "tps",
        "ttft",
    )

    def __init__(
        self, m: PrometheusMetrics, endpoint: str, model: str, key: str, status: str
    ) -> None:
        self.metrics, self.endpoint, self.model, self.key = m, endpoint, model, key
        self.requests = _counting(m.inference.labels(endpoint, model, key, status))
        self.duration = _observing(m.inference_duration.labels(endpoint, model))
        self.ttft: Any = None
        self.tokens_in: Any = None
        self.tokens_out: Any = None
        self.tps: Any = None

    def observe_ttft(self, seconds: float) -> None:
        if self.ttft is None:
            self.ttft = _observing(self.metrics.ttft.labels(self.endpoint, self.model))
        self.ttft.observe(seconds)

    def count_tokens(self, tokens_in: int | None, tokens_out: int | None) -> None:
        if tokens_in is not None and tokens_in > 0:
            if self.tokens_in is None:
                self.tokens_in = _counting(self.metrics.tokens.labels(self.model, self.key, "in"))
            self.tokens_in.inc(tokens_in)
        if tokens_out is not None and tokens_out > 0:
            if self.tokens_out is None:
                self.tokens_out = _counting(self.metrics.tokens.labels(self.model, self.key, "out"))
            self.tokens_out.inc(tokens_out)

    def observe_tps(self, tokens_per_second: float) -> None:
        if self.tps is None:
            self.tps = _observing(self.metrics.tps.labels(self.model))
        self.tps.observe(tokens_per_second)


def _is_scrape(ex: Exchange) -> bool:
    """Whether this is a `/metrics` scrape (however spelled), left out of in-flight requests:
    else an idle gateway reads 1, the scrape counting itself. Only quiet paths are looked at."""
    scrape = False
    if is_quiet(ex):
        try:
            scrape = normalise(ex.path) == "/metrics"
        except GatewayError:
            scrape = False
    ex.attributes["scrape"] = scrape
    return scrape


class PrometheusMetrics:
    def __init__(self, *, multiprocess: bool = False, models: ModelNames | None = None) -> None:
        self.multiprocess = multiprocess
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "lmgate_requests",
            "Requests handled, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "lmgate_request_duration_seconds",
            "Time from request to the last byte of the answer.",
            ["route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "lmgate_requests_in_flight",
            "Requests being handled.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.errors = Counter(
            "lmgate_errors",
            "Requests that failed (status >= 400 or aborted), by route.",
            ["route"],
            registry=r,
        )
        self.upstream_up = Gauge(
            "lmgate_upstream_up",
            "1 when the upstream answered its last probe.",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.inference = Counter(
            "lmgate_inference_requests",
            "Inference requests, by endpoint, model, key and status.",
            ["endpoint", "model", "key", "status"],
            registry=r,
        )
        self.inference_duration = Histogram(
            "lmgate_inference_duration_seconds",
            "Inference request latency, to the last byte.",
            ["endpoint", "model"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "lmgate_time_to_first_token_seconds",
            "Streams: time from request to first token.",
            ["endpoint", "model"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "lmgate_tokens",
            "Tokens as the upstream counted them; direction is in or out.",
            ["model", "key", "direction"],
            registry=r,
        )
        self.tps = Histogram(
            "lmgate_output_tokens_per_second",
            "Generation speed of each answer, per model.",
            ["model"],
            buckets=_TPS_BUCKETS,
            registry=r,
        )
        self._model = models or ModelNames()
        self._key = _Bounded()
        self._routes: dict[tuple[str, str], _RouteSeries] = {}
        self._inference: dict[tuple[str, str, str, str], _InferenceSeries] = {}

    def on_start(self, ex: Exchange) -> None:
        if not _is_scrape(ex):
            self.in_flight.inc()

    def _route(self, route: str, status: str) -> _RouteSeries:
        """The children for one label combination, looked up once: `labels()` costs more than
        the update. Bounded whatever clients send."""
        series = self._routes.get((route, status))
        if series is None:
            if len(self._routes) > 10_000:
                self._routes.clear()
            series = self._routes[route, status] = _RouteSeries(self, route, status)
        return series

    def _inference_series(
        self, endpoint: str, model: str, key: str, status: str
    ) -> _InferenceSeries:
        series = self._inference.get((endpoint, model, key, status))
        if series is None:
            if len(self._inference) > 10_000:
                self._inference.clear()
            series = _InferenceSeries(self, endpoint, model, key, status)
            self._inference[endpoint, model, key, status] = series
        return series

    def on_finish(self, ex: Exchange) -> None:
        if not ex.attributes.get("scrape"):
            self.in_flight.dec()
        status = str(ex.status)
        route = self._route(route_label(ex), status)
        seconds = ex.latency_ms / 1000.0
        route.requests.inc(1)
        route.duration.observe(seconds)
        if ex.failed:
            route.errors.inc(1)
        if ex.endpoint is None or is_quiet(ex):
            return
        series = self._inference_series(
            ex.endpoint, self._model(ex.model) or "-", self._key(ex.key_name), status
        )
        series.requests.inc(1)
        series.duration.observe(seconds)
        if ex.ttft_ms is not None:
            series.observe_ttft(ex.ttft_ms / 1000.0)
        tokens_in, tokens_out = ex.tokens_in, ex.tokens_out
        if tokens_in or tokens_out:
            series.count_tokens(tokens_in, tokens_out)
            if ex.tokens_per_second is not None and tokens_out is not None and tokens_out > 0:
                series.observe_tps(ex.tokens_per_second)

    def render(self) -> bytes:
        if self.multiprocess:
            every_worker = CollectorRegistry()
            MultiProcessCollector(every_worker)  # type: ignore[no-untyped-call]
            return generate_latest(every_worker)
        return generate_latest(self.registry)


Reading = Callable[[], Iterable[tuple[str, str, str, float, dict[str, str]]]]


class StateCollector(Collector):
    """Gauges and counters read at scrape time: (kind, name, help, value, labels) tuples."""

    def __init__(self, read: Reading) -> None:
        self.read = read

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for kind, name, text, value, labels in self.read():
            family = families.get(name)
            if family is None:
                cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                family = families[name] = cls(name, text, labels=sorted(labels))
            family.add_metric([labels[k] for k in sorted(labels)], value)
        return list(families.values())

    def describe(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        return []
