"""What the core knows about one upstream: its loaded models, their slots, what it is doing.

State is per upstream from the start, so the same rules (slots, one load at a time, count and
memory limits) hold for each of several upstreams and placement can compare them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lmgate.schedule.types import ModelPolicy, UpstreamSpec


@dataclass(slots=True)
class Resident:
    """A model loaded on an upstream, as the core accounts for it."""

    model: str
    slots: int
    last_used: float
    owned: bool  # lmgate loaded it: its idle TTL applies
    size: int = 0
    reported_slots: int | None = None
    in_flight: int = 0
    draining_since: float | None = None  # new requests are held while set
    implicit: bool = False  # on an upstream without load capability, known only from traffic
    kept: bool = False  # loaded again after an idle unload: no idle TTL until its next request


@dataclass(slots=True)
class Switch:
    """A load that waits for busy models to drain (started because a request starved)."""

    target: str
    since: float


@dataclass(slots=True)
class UpstreamState:
    spec: UpstreamSpec
    residents: dict[str, Resident] = field(default_factory=dict)
    unloading: dict[str, Resident] = field(default_factory=dict)  # asked to unload, not yet gone
    sizes: dict[str, int] = field(default_factory=dict)  # size_bytes of every model listed
    loading: str | None = None
    loading_since: float = 0.0
    switch: Switch | None = None
    in_flight: int = 0
    failed: dict[str, tuple[float, str]] = field(default_factory=dict)  # model: (until, why)
    cooling: dict[str, float] = field(default_factory=dict)  # model: no drain before this

    @property
    def name(self) -> str:
        return self.spec.name

    def slots_for(
        self, policy: ModelPolicy | None, reported: int | None, default_slots: int
    ) -> int:
        """Profile override, else the upstream's `parallel`, else the configured default."""
        if policy is not None and policy.slots is not None:
            return max(1, policy.slots)
        if reported is not None:
            return max(1, reported)
        return max(1, self.spec.default_slots or default_slots)

    def size_of(self, model: str, policy: ModelPolicy | None) -> int:
        """Known size in bytes; an unknown size counts as 0 (it cannot be budgeted)."""
        if policy is not None and policy.size_bytes is not None:
            return policy.size_bytes
        return self.sizes.get(model, 0)

    def bytes_used(self, loading_size: int = 0) -> int:
        return sum(r.size for r in self.residents.values()) + loading_size

    def count(self) -> int:
        extra = self.loading is not None and self.loading not in self.residents
        return len(self.residents) + (1 if extra else 0)

    def has_room_for_more(self) -> bool:
        """False when another answer would exceed `max_concurrent` over all models."""
        limit = self.spec.max_concurrent
        return limit is None or self.in_flight < limit

    def admissible(self, model: str) -> Resident | None:
        """The resident a request for `model` can start on now, if any. Upstreams that cannot
        load are assumed to serve any model (JIT); the caller creates the implicit resident."""
        resident = self.residents.get(model)
        if not self.has_room_for_more():
            return None
        if resident is None:
            return None
        if resident.draining_since is not None or resident.in_flight >= resident.slots:
            return None
        return resident

    def serves(self, model: str) -> bool:
        """The model is here (or will be, once the running load ends): waiting makes sense."""
        return not self.spec.can_load or model in self.residents or self.loading == model

    def backoff(self, model: str, now: float) -> tuple[float, str] | None:
        entry = self.failed.get(model)
        if entry is None:
            return None
        if entry[0] <= now:
            del self.failed[model]
            return None
        return entry

    def new_resident(
        self,
        model: str,
        slots: int | None,
        now: float,
        owned: bool,
        policy: ModelPolicy | None,
        default_slots: int,
    ) -> Resident:
        return Resident(
            model,
            self.slots_for(policy, slots, default_slots),
            now,
            owned,
            size=self.size_of(model, policy),
            reported_slots=slots,
        )

    def apply_listing(
        self,
        loaded: Mapping[str, int | None],
        sizes: Mapping[str, int] | None,
        now: float,
        policies: Mapping[str, ModelPolicy],
        default_slots: int,
    ) -> None:
        """Align with the upstream's own listing. A model that appears while lmgate loads it
        is lmgate's; any other newcomer is someone else's. Answers running on a model that
        vanished keep their `Resident` until they end; it just no longer takes requests."""
        if sizes is not None:
            self.sizes = dict(sizes)
        for known in self.residents.values():
            known.size = self.size_of(known.model, policies.get(known.model))
        for model, slots in loaded.items():
            if model in self.unloading:
                continue
            resident = self.residents.get(model)
            if resident is None:
                owned = self.loading == model
                policy = policies.get(model)
                self.residents[model] = self.new_resident(
                    model, slots, now, owned, policy, default_slots
                )
            else:
                resident.implicit = False
                resident.reported_slots = slots
                resident.slots = self.slots_for(policies.get(model), slots, default_slots)
        for model, resident in list(self.residents.items()):
            if model in loaded:
                continue
            if self.spec.can_load or not resident.in_flight:
                del self.residents[model]
            else:
                resident.implicit = True  # still serving what it JIT-loaded
