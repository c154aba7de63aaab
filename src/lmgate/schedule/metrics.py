"""The scheduler's Prometheus series: queue length per model, time waited, switches and
evictions by reason. Model names go through the gateway's `ModelNames`, so the series stay
bounded whatever clients ask for; reasons are the core's few fixed words."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from lmgate.observe.cardinality import ModelNames
from lmgate.schedule.core import Scheduler

_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ScheduleMetrics:
    def __init__(self, registry: CollectorRegistry, models: ModelNames) -> None:
        self.models = models
        self.queue = Gauge(
            "lmgate_queue_length",
            "Requests waiting for a slot or a load, per model.",
            ["model"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.wait = Histogram(
            "lmgate_queue_wait_seconds",
            "Time a queued request waited before it was forwarded.",
            ["model"],
            buckets=_WAIT_BUCKETS,
            registry=registry,
        )
        self.switches = Counter(
            "lmgate_model_switches",
            "Models the scheduler loaded, by reason (demand, starved, admin).",
            ["model", "reason"],
            registry=registry,
        )
        self.evictions = Counter(
            "lmgate_model_evictions",
            "Models the scheduler unloaded, by reason (idle_ttl, make_room).",
            ["model", "reason"],
            registry=registry,
        )
        self._shown: set[str] = set()

    def _label(self, model: str) -> str:
        return self.models(model) or "-"

    def queued(self, core: Scheduler) -> None:
        """The queue length per model, after an event that may have changed it."""
        by_model = core.queue.by_model
        if not by_model and not self._shown:
            return
        shown = {self._label(m) for m in by_model}
        counts = dict.fromkeys(shown | self._shown, 0)
        for model, waiting in by_model.items():
            counts[self._label(model)] += len(waiting)
        for label, count in counts.items():
            self.queue.labels(label).set(count)
        self._shown = shown

    def waited(self, model: str, seconds: float) -> None:
        self.wait.labels(self._label(model)).observe(seconds)

    def switched(self, model: str, reason: str) -> None:
        self.switches.labels(self._label(model), reason).inc()

    def evicted(self, model: str, reason: str) -> None:
        self.evictions.labels(self._label(model), reason).inc()
