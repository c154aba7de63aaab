"""Prometheus metrics (`lmgate_` prefix), one registry per app so tests can run several."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from lmgate.exchange import Exchange

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def route_label(ex: Exchange) -> str:
    """A low-cardinality label: the inference kind, or the route family."""
    if ex.endpoint:
        return ex.endpoint
    for family in ("/admin", "/debug", "/api/v0", "/api/v1", "/v1"):
        if ex.path.startswith(family):
            return family.strip("/")
    return "other"


class PrometheusMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "lmgate_requests",
            "Requests handled, by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "lmgate_request_duration_seconds",
            "Time from request to the last byte of the answer.",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "lmgate_requests_in_flight", "Requests being handled.", registry=self.registry
        )
        self.errors = Counter(
            "lmgate_errors",
            "Requests that failed (status >= 400 or aborted), by route.",
            ["route"],
            registry=self.registry,
        )
        self.upstream_up = Gauge(
            "lmgate_upstream_up",
            "1 when the upstream answered its last probe.",
            registry=self.registry,
        )

    def on_start(self, ex: Exchange) -> None:
        self.in_flight.inc()

    def on_finish(self, ex: Exchange) -> None:
        self.in_flight.dec()
        route = route_label(ex)
        self.requests.labels(route, str(ex.status)).inc()
        self.duration.labels(route).observe(ex.latency_ms / 1000.0)
        if ex.failed:
            self.errors.labels(route).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
