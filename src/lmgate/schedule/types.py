"""The scheduler's vocabulary: what the shell tells the core, and what the core asks it to do.

Everything here is a frozen value, so the shell may keep, log or send any of it without the
core's state changing underneath.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

# Reject codes with their HTTP status: the shell turns them into OpenAI-style errors.
QUEUE_FULL = "queue_full"  # 429: the queue holds `queue_max` requests
QUEUE_TIMEOUT = "queue_timeout"  # 503: waited `queue_timeout` seconds
LOAD_DENIED = "load_denied"  # 409: the key may not make lmgate load a model
LOAD_LIMIT = "load_limit"  # 429: the key caused `max_loads_per_hour` loads in the last hour
MODEL_TOO_LARGE = "model_too_large"  # 503: larger than every candidate upstream's budget
LOAD_FAILED = "load_failed"  # 503: the last load of this model failed moments ago
NO_UPSTREAM = "no_upstream"  # 503: none of the named upstreams is known (or takes requests)

STATUS = {
    QUEUE_FULL: 429,
    QUEUE_TIMEOUT: 503,
    LOAD_DENIED: 409,
    LOAD_LIMIT: 429,
    MODEL_TOO_LARGE: 503,
    LOAD_FAILED: 503,
    NO_UPSTREAM: 503,
}


@dataclass(frozen=True, slots=True)
class Request:
    """An inference request as the scheduler sees it: who asks, for what, and where it may go.

    `model` is the name requests wait under (fairness, positions). An alias that names other
    keys on other upstreams carries them in `keys` (`{upstream: key}`, where it is not
    `model`): slots, loads and evictions are each upstream's own key's (`key_on`)."""

    id: str
    key: str
    model: str
    weight: float = 1.0  # the key's share among waiting requests of the same priority
    priority: int = 0  # a higher class is always served first (admin keys)
    upstreams: frozenset[str] | None = None  # None: any upstream
    may_load: bool = True  # False: may use loaded models, never cause a load
    max_loads_per_hour: int | None = None
    keys: Mapping[str, str] | None = field(default=None, hash=False)  # None: `model` everywhere

    def key_on(self, upstream: str) -> str:
        """The model's key on `upstream`."""
        keys = self.keys
        return self.model if keys is None else keys.get(upstream, self.model)


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """One upstream's limits. `can_load=False` (LM Studio 0.3, plain OpenAI servers): every model
    counts as available (the server may JIT-load it); queueing and fairness still apply."""

    name: str
    can_load: bool = True
    max_loaded_models: int | None = None
    memory_budget: int | None = None  # bytes
    default_slots: int | None = None  # per model, when the upstream reports no `parallel`
    max_concurrent: int | None = None  # answers at once over all models (1 for LM Studio 0.3)
    weight: float = 1.0  # preference among equally good upstreams
    draining: bool = False  # takes no new request; what runs there ends normally


@dataclass(frozen=True, slots=True)
class ModelPolicy:
    """Per-model settings from the model's profile."""

    slots: int | None = None  # overrides the reported `parallel`
    ttl: float | None = None  # idle seconds before lmgate unloads it; 0 = never
    pinned: bool = False  # never evicted, never unloaded for idleness
    size_bytes: int | None = None  # overrides the upstream's `size_bytes`


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    queue_max: int = 256
    queue_timeout: float = 300.0
    switch_max_wait: float = 60.0  # starvation cap: past it, a switch drains busy models
    drain_max_wait: float = 120.0  # a drain longer than this is given up (nothing is cut)
    default_slots: int = 4
    model_ttl: float = 0.0  # default idle TTL for models lmgate loaded; 0 = never
    manage_all: bool = False  # also unload/evict models someone else loaded
    load_retry_s: float = 10.0  # after a failed load, refuse that model this long
    service_estimate_s: float = 5.0  # first guess of an answer's duration, for ETAs
    load_estimate_s: float = 10.0  # first guess of a load's duration


@dataclass(frozen=True, slots=True)
class Admit:
    """Forward the request to `upstream` now; call `finish` when its answer ends."""

    request_id: str
    upstream: str
    model: str  # the model's key on `upstream`
    waited: float  # seconds spent queued (0.0 when admitted on arrival)
    position: int  # queue position when it was queued (0: never queued)


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer the request with this error; it never reaches an upstream."""

    request_id: str
    status: int
    code: str
    message: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Load:
    """Load `model` on `upstream`; the `Unload`s of `evicting` precede it in the same list.
    Report the outcome with `load_finished` or `load_failed`."""

    upstream: str
    model: str
    evicting: tuple[str, ...] = ()
    reason: Literal["demand", "starved", "admin"] = "demand"
    key: str | None = None  # the key charged for the load


@dataclass(frozen=True, slots=True)
class Unload:
    """Unload `model` from `upstream` (it has no request in flight); report with `unloaded`."""

    upstream: str
    model: str
    reason: Literal["idle_ttl", "make_room"]


Action = Admit | Reject | Load | Unload


class LoadRefused(Exception):
    """An explicit load (admin, preload) that the rules forbid right now."""

    def __init__(self, code: str, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """For `X-Queue-Position` and `: queued position=N eta_ms=M`: 1 = next for its model."""

    position: int
    eta_ms: int


@dataclass(frozen=True, slots=True)
class WaitingView:
    request_id: str
    key: str
    model: str
    priority: int
    position: int
    waited_ms: int


@dataclass(frozen=True, slots=True)
class ModelView:
    upstream: str
    model: str
    slots: int
    in_flight: int
    waiting: int
    draining: bool
    pinned: bool
    owned: bool  # loaded by lmgate (subject to its idle TTL)
    ttl_remaining: float | None  # None: never unloaded for idleness


@dataclass(frozen=True, slots=True)
class UpstreamView:
    name: str
    can_load: bool
    loading: str | None
    switching_to: str | None  # a switch waiting for busy models to drain
    loaded: int
    bytes_used: int
    memory_budget: int | None
    max_loaded_models: int | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A read-only picture for `/debug/queue` and the dashboard."""

    waiting: tuple[WaitingView, ...]
    models: tuple[ModelView, ...]
    upstreams: tuple[UpstreamView, ...]
