"""What the core tells about itself: queue positions with estimated waits, and snapshots.

Estimates are moving averages of observed answer and load durations per model, seeded with the
configured guesses; they only feed ETAs and `Retry-After`, never a decision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmgate.schedule.fairness import Waiting
from lmgate.schedule.planner import ttl_of
from lmgate.schedule.types import ModelView, QueueInfo, Snapshot, UpstreamView, WaitingView

if TYPE_CHECKING:
    from lmgate.schedule.core import Scheduler

ALPHA = 0.2
MAX_MODELS = 1024  # bound on remembered models: names come from clients


class Estimates:
    def __init__(self, service_s: float, load_s: float) -> None:
        self.default_service = service_s
        self.default_load = load_s
        self._service: dict[str, float] = {}
        self._load: dict[str, float] = {}

    @staticmethod
    def _update(table: dict[str, float], model: str, value: float) -> None:
        old = table.get(model)
        if old is None and len(table) >= MAX_MODELS:
            del table[next(iter(table))]
        table[model] = value if old is None else old + ALPHA * (value - old)

    def served(self, model: str, seconds: float) -> None:
        self._update(self._service, model, max(0.0, seconds))

    def loaded(self, model: str, seconds: float) -> None:
        self._update(self._load, model, max(0.0, seconds))

    def service(self, model: str) -> float:
        return self._service.get(model, self.default_service)

    def load(self, model: str) -> float:
        return self._load.get(model, self.default_load)

    def drain_time(self, waiting: int, slots: int) -> float:
        """Rough seconds until `waiting` requests have started on `slots` slots."""
        mean = (
            sum(self._service.values()) / len(self._service)
            if self._service
            else self.default_service
        )
        return waiting * mean / max(1, slots)


def queue_info(s: Scheduler, waiting: Waiting, now: float) -> QueueInfo:
    req = waiting.request
    pos = s.queue.position(waiting)
    est = s.estimates
    ups = s.candidates(req)
    model = req.key_on(ups[0].name) if ups else req.model  # an alias: its first key's times
    service = est.service(model)
    policy = s.policies.get(model)
    slots = free = 0
    for up in ups:
        resident = up.residents.get(req.key_on(up.name))
        if resident is not None and resident.draining_since is None:
            slots += resident.slots
            free += max(0, resident.slots - resident.in_flight)
        elif resident is None and not up.spec.can_load:
            slots += up.slots_for(policy, None, s.config.default_slots)
    if slots:
        eta = max(0, pos - free) * service / slots
    else:
        per = max((up.slots_for(policy, None, s.config.default_slots) for up in ups), default=1)
        loading = [up for up in ups if up.loading == req.key_on(up.name)]
        if loading:
            ahead = max(0.0, est.load(model) - (now - loading[0].loading_since))
        else:
            ahead = est.load(model) + service  # a switch: drain or evict first
        eta = ahead + max(0, pos - per) * service / per
    return QueueInfo(pos, int(eta * 1000))


def build_snapshot(s: Scheduler, now: float) -> Snapshot:
    counts: dict[str, int] = {}
    waiting: list[WaitingView] = []
    for w in s.queue.in_order():
        model = w.request.model
        counts[model] = counts.get(model, 0) + 1
        waiting.append(
            WaitingView(
                w.request.id,
                w.request.key,
                model,
                w.request.priority,
                counts[model],
                int((now - w.arrival) * 1000),
            )
        )
    models: list[ModelView] = []
    uviews: list[UpstreamView] = []
    for up in s.ups.values():
        for r in up.residents.values():
            policy = s.policies.get(r.model)
            ttl = None if r.kept else ttl_of(s, up, r.model, r.owned)
            remaining = None
            if ttl is not None:
                remaining = ttl if r.in_flight else max(0.0, ttl - (now - r.last_used))
            models.append(
                ModelView(
                    up.name,
                    r.model,
                    r.slots,
                    r.in_flight,
                    counts.get(r.model, 0) + s.queue.keyed.get(r.model, 0),
                    r.draining_since is not None,
                    policy is not None and policy.pinned,
                    r.owned,
                    remaining,
                )
            )
        uviews.append(
            UpstreamView(
                up.name,
                up.spec.can_load,
                up.loading,
                up.switch.target if up.switch else None,
                len(up.residents),
                up.bytes_used(),
                up.spec.memory_budget,
                up.spec.max_loaded_models,
            )
        )
    return Snapshot(tuple(waiting), tuple(models), tuple(uviews))
