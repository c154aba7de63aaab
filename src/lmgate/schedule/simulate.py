"""Replaying a trace through the scheduler on a fake clock and a simulated upstream.

The simulated upstream loads in `load_time` seconds, unloads at once, and serves each request
for its own service time. It checks what a real one would suffer from: an unload while answers
run (`busy_evictions`), more answers at once than a model's slots (`over_slots`). The same
trace can run through `FifoPolicy`, a plain first-come-first-served loader that also never cuts
an answer, to compare how many model switches each needs.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from lmgate.schedule.core import Scheduler
from lmgate.schedule.types import (
    Action,
    Admit,
    Load,
    Reject,
    Request,
    SchedulerConfig,
    Unload,
    UpstreamSpec,
)


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float
    key: str
    model: str
    service: float
    weight: float = 1.0
    priority: int = 0


class Policy(Protocol):
    def submit(self, request: Request, now: float) -> list[Action]: ...
    def finish(self, request_id: str, now: float) -> list[Action]: ...
    def load_finished(
        self, upstream: str, model: str, now: float, slots: int | None = None
    ) -> list[Action]: ...
    def unloaded(self, upstream: str, model: str, now: float) -> list[Action]: ...
    def tick(self, now: float) -> list[Action]: ...


@dataclass(slots=True)
class SimResult:
    switches: int = 0  # loads started
    evictions: int = 0  # unloads to make room
    busy_evictions: int = 0  # unloads of a model with answers running: must stay 0
    over_slots: int = 0  # admissions beyond slots or onto an unloaded model: must stay 0
    unanswered: int = 0  # requests never admitted nor refused: must stay 0
    waits: dict[str, list[float]] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)

    def mean_wait(self, key: str) -> float:
        waits = self.waits.get(key) or [0.0]
        return sum(waits) / len(waits)

    def p99_wait(self, key: str) -> float:
        waits = sorted(self.waits.get(key) or [0.0])
        return waits[max(0, math.ceil(0.99 * len(waits)) - 1)]

    def jain(self) -> float:
        """Jain's index over the keys' mean waits: 1.0 when every key waits alike."""
        means = [self.mean_wait(k) for k in self.waits]
        square = sum(m * m for m in means)
        return 1.0 if square == 0 else sum(means) ** 2 / (len(means) * square)

    def summary(self) -> dict[str, object]:
        return {
            "switches": self.switches,
            "busy_evictions": self.busy_evictions,
            "jain": round(self.jain(), 3),
            "keys": {
                k: {
                    "served": len(self.waits[k]),
                    "rejected": self.rejected.get(k, 0),
                    "mean_wait_s": round(self.mean_wait(k), 3),
                    "p99_wait_s": round(self.p99_wait(k), 3),
                }
                for k in sorted(self.waits)
            },
        }


class FifoPolicy:
    """Strict arrival order, a switch whenever the head needs another model: the least
    recently used idle model makes room, and a busy one is waited for, never cut."""

    def __init__(self, upstream: UpstreamSpec, slots: int) -> None:
        self.spec = upstream
        self.slots = slots
        self.queue: deque[tuple[Request, float]] = deque()
        self.loaded: dict[str, int] = {}
        self.last_used: dict[str, float] = {}
        self.loading: str | None = None
        self.running: dict[str, str] = {}

    def submit(self, request: Request, now: float) -> list[Action]:
        self.queue.append((request, now))
        return self._run(now)

    def finish(self, request_id: str, now: float) -> list[Action]:
        model = self.running.pop(request_id)
        self.loaded[model] -= 1
        self.last_used[model] = now
        return self._run(now)

    def load_finished(
        self, upstream: str, model: str, now: float, slots: int | None = None
    ) -> list[Action]:
        self.loading = None
        self.loaded[model] = 0
        self.last_used[model] = now
        return self._run(now)

    def unloaded(self, upstream: str, model: str, now: float) -> list[Action]:
        return []

    def tick(self, now: float) -> list[Action]:
        return self._run(now)

    def _run(self, now: float) -> list[Action]:
        actions: list[Action] = []
        name, limit = self.spec.name, self.spec.max_loaded_models
        while self.queue:
            request, at = self.queue[0]
            model = request.model
            if model in self.loaded:
                if self.loaded[model] >= self.slots:
                    break
                self.queue.popleft()
                self.loaded[model] += 1
                self.running[request.id] = model
                actions.append(Admit(request.id, name, model, now - at, 1))
                continue
            if self.loading is not None:
                break
            evicting: tuple[str, ...] = ()
            if limit is not None and len(self.loaded) >= limit:
                idle = [m for m, n in self.loaded.items() if n == 0]
                if not idle:
                    break
                victim = min(idle, key=lambda m: self.last_used[m])
                del self.loaded[victim]
                evicting = (victim,)
                actions.append(Unload(name, victim, "make_room"))
            self.loading = model
            actions.append(Load(name, model, evicting))
            break
        return actions


def replay(
    trace: Sequence[Arrival],
    *,
    upstream: UpstreamSpec,
    load_time: float,
    slots: int = 4,
    policy: Literal["fair", "fifo"] = "fair",
    config: SchedulerConfig | None = None,
    preloaded: Sequence[str] = (),
    tick: float = 0.5,
) -> SimResult:
    """Run `trace` to the end (every request answered or refused) and report."""
    cfg = config or SchedulerConfig(default_slots=slots)
    core: Policy = Scheduler(cfg, [upstream]) if policy == "fair" else FifoPolicy(upstream, slots)
    result = SimResult(waits={a.key: [] for a in trace})
    loaded: dict[str, int] = {}  # the simulated upstream: model -> answers running
    events: list[tuple[float, int, str, str]] = []
    seq = 0

    def at(time: float, kind: str, what: str) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (time, seq, kind, what))

    service = {f"r{i}": a.service for i, a in enumerate(trace)}
    keys = {f"r{i}": a.key for i, a in enumerate(trace)}
    ended: set[str] = set()
    ran_on: dict[str, str] = {}
    horizon = max((a.at for a in trace), default=0.0) + cfg.queue_timeout + 100 * load_time

    def carry_out(actions: list[Action], now: float) -> None:
        work = deque(actions)
        while work:
            action = work.popleft()
            if isinstance(action, Admit):
                ended.add(action.request_id)
                running = loaded.get(action.model)
                if running is None or running >= slots:
                    result.over_slots += 1
                loaded[action.model] = (running or 0) + 1
                ran_on[action.request_id] = action.model
                result.waits[keys[action.request_id]].append(action.waited)
                at(now + service[action.request_id], "done", action.request_id)
            elif isinstance(action, Reject):
                ended.add(action.request_id)
                key = keys[action.request_id]
                result.rejected[key] = result.rejected.get(key, 0) + 1
            elif isinstance(action, Unload):
                if loaded.pop(action.model, 0):
                    result.busy_evictions += 1
                result.evictions += action.reason == "make_room"
                work.extend(core.unloaded(action.upstream, action.model, now))
            else:
                result.switches += 1
                at(now + load_time, "loaded", action.model)

    for model in preloaded:
        loaded[model] = 0
        carry_out(core.load_finished(upstream.name, model, 0.0, slots), 0.0)
    for i, arrival in enumerate(trace):
        at(arrival.at, "arrive", str(i))
    at(0.0, "tick", "")
    while events:
        now, _, kind, what = heapq.heappop(events)
        if kind == "arrive":
            a = trace[int(what)]
            request = Request(f"r{what}", a.key, a.model, a.weight, a.priority)
            carry_out(core.submit(request, now), now)
        elif kind == "done":
            model = ran_on.pop(what)
            if model in loaded:
                loaded[model] -= 1
            carry_out(core.finish(what, now), now)
        elif kind == "loaded":
            loaded[what] = 0
            carry_out(core.load_finished(upstream.name, what, now, slots), now)
        else:
            carry_out(core.tick(now), now)
            pending = any(kind != "tick" for _, _, kind, _ in events)
            if pending or (len(ended) < len(trace) and now < horizon):
                at(now + tick, "tick", "")
    result.unanswered = len(trace) - len(ended)
    return result


def random_trace(
    seed: int,
    *,
    keys: Sequence[str],
    models: Sequence[str],
    duration: float,
    rate: float,
    service: tuple[float, float] = (0.5, 3.0),
) -> list[Arrival]:
    """Poisson arrivals at `rate` per second, each from a random key for a random model."""
    rng = random.Random(seed)
    trace: list[Arrival] = []
    now = rng.expovariate(rate)
    while now < duration:
        trace.append(Arrival(now, rng.choice(keys), rng.choice(models), rng.uniform(*service)))
        now += rng.expovariate(rate)
    return trace


def fast_path() -> Callable[[], None]:
    """One request through the fast path, for timing: submit on a loaded model, then finish."""
    sched = Scheduler(SchedulerConfig(), [UpstreamSpec("lms")])
    sched.observe("lms", 0.0, {"m": 4})
    counter = iter(range(1 << 62))

    def once() -> None:
        rid = str(next(counter))
        sched.submit(Request(rid, "k", "m"), 1.0)
        sched.finish(rid, 1.0)

    return once
