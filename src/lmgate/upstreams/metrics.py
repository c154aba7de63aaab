"""Prometheus series per upstream (label `upstream`, its name; never its URL or token)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class UpstreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.state = Gauge(
            "lmgate_upstreams_up",
            "1 while the upstream takes requests (listed, circuit closed), per upstream.",
            ["upstream"],
            registry=registry,
            multiprocess_mode="livemostrecent",
        )
        self.requests = Counter(
            "lmgate_upstream_requests",
            "Inference requests sent to each upstream, by outcome (ok, error, retried).",
            ["upstream", "outcome"],
            registry=registry,
        )

    def up(self, upstream: str, up: bool) -> None:
        self.state.labels(upstream).set(1 if up else 0)

    def sent(self, upstream: str, outcome: str) -> None:
        self.requests.labels(upstream, outcome).inc()
