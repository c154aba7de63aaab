"""The scheduler in the request path: the async shell around the pure core.

One `SchedulerShell` per gateway (per worker) holds the `Scheduler`. As a proxy hook it submits
every inference request for a model the upstream offers; a request admitted on arrival goes on
at once (no task, no future: `submit` answered synchronously), the others wait on a future that
a later event resolves. Load and Unload actions run in background tasks (the core allows one
load at a time per upstream) and report back. As an observer it ends every request exactly
once, whichever way it left (answered, refused, failed, or its client gone while it waited).
A tick loop drives timeouts, drains and idle TTL from `next_deadline`; each model-list sync
feeds `observe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from typing import Any

import structlog

from lmgate.admin.models import ModelManager
from lmgate.errors import GatewayError
from lmgate.exchange import Exchange
from lmgate.hooks import EarlyAnswer, ProxyRequest, ResponseTap
from lmgate.observe.events import EventBus
from lmgate.schedule.core import Scheduler
from lmgate.schedule.errors import SchedulerRefusal
from lmgate.schedule.metrics import ScheduleMetrics
from lmgate.schedule.notify import wait_announcing, wants_comments
from lmgate.schedule.types import (
    Action,
    Admit,
    Load,
    LoadRefused,
    ModelPolicy,
    Reject,
    Request,
    SchedulerConfig,
    Unload,
    UpstreamSpec,
)
from lmgate.settings import Settings
from lmgate.store.state import StateStore
from lmgate.upstream.sync import UpstreamWatcher

log = structlog.get_logger("lmgate.schedule")

UPSTREAM = "upstream"  # one upstream per gateway today
_ID = "sched_id"  # the core's id for an exchange, in `Exchange.attributes`
TICK_MAX_S = 1.0  # idle TTL and the like are checked at least this often
LMSTUDIO_03_SLOTS = 1  # LM Studio 0.3 generates one answer at a time


def config_of(settings: Settings, *, alone: bool = True) -> SchedulerConfig:
    """`alone=False` (one of several workers): no idle unloads, since this worker cannot see
    another worker's requests for the model."""
    return SchedulerConfig(
        queue_max=settings.queue_max,
        queue_timeout=settings.queue_timeout,
        switch_max_wait=settings.switch_max_wait,
        default_slots=settings.model_slots or 4,
        model_ttl=settings.model_ttl if alone else 0.0,
        manage_all=settings.manage_all_models,
    )


class QueueTap:
    """Tells a client whose request waited where it stood and for how long."""

    __slots__ = ("headers",)

    def __init__(self, position: int, waited: float) -> None:
        self.headers = [
            (b"x-queue-position", str(position).encode()),
            (b"x-queue-wait-ms", str(round(waited * 1000.0)).encode()),
        ]

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return [*headers, *self.headers]

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def end(self) -> bytes:
        return b""


class SchedulerShell:
    def __init__(
        self,
        settings: Settings,
        watcher: UpstreamWatcher,
        models: ModelManager,
        state: StateStore,
        bus: EventBus,
        *,
        clock: Callable[[], float] = time.monotonic,
        alone: bool = True,
    ) -> None:
        self.settings = settings
        self.watcher = watcher
        self.models = models
        self.state = state
        self.bus = bus
        self.clock = clock
        self.alone = alone  # the only worker: it sees every request the upstream serves
        self.spec = self._spec()
        self.core = Scheduler(config_of(settings, alone=alone), [self.spec])
        self.metrics: ScheduleMetrics | None = None
        self._waiting: dict[str, asyncio.Future[Admit | Reject]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._policies: dict[str, ModelPolicy] = {}

    # -- the upstream as the core sees it -------------------------------------------------------

    def _spec(self) -> UpstreamSpec:
        """Limits and capability: switching needs on-demand loading and LM Studio's REST v1.
        One of several workers loads on demand but never evicts: the victim may be answering
        another worker's requests, which this one cannot see."""
        caps, s = self.watcher.caps, self.settings
        old = caps.kind == "lmstudio-0.3"
        return UpstreamSpec(
            UPSTREAM,
            can_load=s.on_demand_load and caps.model_management,
            max_loaded_models=s.max_loaded_models if self.alone else None,
            memory_budget=s.model_memory_budget if self.alone else None,
            default_slots=s.model_slots or (LMSTUDIO_03_SLOTS if old else None),
            max_concurrent=LMSTUDIO_03_SLOTS if old and s.model_slots is None else None,
        )

    def synced(self) -> None:
        """After each model-list sync: capability, the active model, what is loaded."""
        now = self.clock()
        spec = self._spec()
        if spec != self.spec:
            self.spec = spec
            self._run(self.core.set_upstream(spec, now))
        self.core.set_active(self.state.state.active_model)
        loaded: dict[str, int | None] = {}
        for instance in self.watcher.instances.values():
            parallel = instance.config.get("parallel")
            slots = parallel if isinstance(parallel, int) and parallel > 0 else None
            if instance.model_key in loaded:
                before = loaded[instance.model_key]
                slots = None if before is None or slots is None else before + slots
            loaded[instance.model_key] = slots
        sizes = {
            m.key: m.size_bytes for m in self.watcher.models.values() if m.size_bytes is not None
        }
        self._run(self.core.observe(UPSTREAM, now, loaded, sizes))

    # -- the request path -----------------------------------------------------------------------

    def _model_key(self, name: str) -> str | None:
        model = self.watcher.find(name)
        return model.key if model is not None else None

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        """Admit the request, or make it wait its turn, or refuse it."""
        if request.kind is None or not ex.model:
            return None
        model = self._model_key(ex.model)
        if model is None:  # unknown to the upstream: its own answer says so
            return None
        rid = str(next(self._ids))
        ex.attributes[_ID] = rid
        verdict = self._run(
            self.core.submit(Request(rid, ex.key_name or "-", model), self.clock()), rid
        )
        if verdict is None:
            early = wants_comments(request) if self.settings.queue_sse_comments else None
            verdict = await self._wait(ex, rid, model, early)
            if early is not None and early.started and isinstance(verdict, Admit):
                return None  # its place was told in the stream: no headers can follow
        if isinstance(verdict, Reject):
            del ex.attributes[_ID]
            raise SchedulerRefusal(verdict)
        if verdict.position:
            return QueueTap(verdict.position, verdict.waited)
        return None

    async def _wait(
        self, ex: Exchange, rid: str, model: str, early: EarlyAnswer | None
    ) -> Admit | Reject:
        """Until admitted or refused; a streaming client that waits long is told where it
        stands (`notify`)."""
        future: asyncio.Future[Admit | Reject] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        info = self.core.position(rid, self.clock())
        self.bus.publish(
            "request_queued",
            model=model,
            key=ex.key_name,
            position=info.position if info else None,
            etaMs=info.eta_ms if info else None,
        )
        self._wake.set()
        try:
            if early is None:
                verdict = await future
            else:
                verdict = await wait_announcing(
                    future, early, lambda: self.core.position(rid, self.clock())
                )
        except BaseException:  # cancelled: the client went away while it waited
            self._waiting.pop(rid, None)
            self._end(ex)
            raise
        if isinstance(verdict, Admit):
            waited_ms = round(verdict.waited * 1000.0)
            self.bus.publish("request_dequeued", model=model, key=ex.key_name, waitedMs=waited_ms)
            if self.metrics is not None:
                self.metrics.waited(model, verdict.waited)
        return verdict

    def on_start(self, ex: Exchange) -> None:
        pass

    def on_finish(self, ex: Exchange) -> None:
        """Every request ends here, whichever way it went: its slot (or place) is freed."""
        if ex.attributes:
            self._end(ex)

    def _end(self, ex: Exchange) -> None:
        rid = ex.attributes.pop(_ID, None)
        if rid is not None:
            self._run(self.core.cancel(rid, self.clock()))

    # -- carrying out the core's actions --------------------------------------------------------

    def _run(self, actions: list[Action], mine: str | None = None) -> Admit | Reject | None:
        """Carry out `actions` in order; returns the verdict on `mine` if one is among them."""
        verdict: Admit | Reject | None = None
        unloads: list[Unload] = []
        for action in actions:
            if isinstance(action, Admit | Reject):
                if action.request_id == mine:
                    verdict = action
                    continue
                future = self._waiting.pop(action.request_id, None)
                if future is not None and not future.done():
                    future.set_result(action)
                elif isinstance(action, Admit):  # nobody waits for it any more
                    self._run(self.core.finish(action.request_id, self.clock()))
            elif isinstance(action, Unload):
                unloads.append(action)
            else:
                evicting = [u for u in unloads if u.model in action.evicting]
                unloads = [u for u in unloads if u.model not in action.evicting]
                self._spawn(self._switch(action, evicting))
        for unload in unloads:
            self._spawn(self._unload_alone(unload))
        if self.metrics is not None:
            self.metrics.queued(self.core)
        return verdict

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _evict(self, unload: Unload) -> bool:
        """Unload every instance of the model; the activation stays whatever happens."""
        try:
            await self.models.evict(unload.model)
        except GatewayError as exc:
            log.warning("model_unload_failed", model=unload.model, error=exc.message)
            self._run(self.core.unload_failed(unload.upstream, unload.model, self.clock()))
            return False
        if self.metrics is not None:
            self.metrics.evicted(unload.model, unload.reason)
        self._run(self.core.unloaded(unload.upstream, unload.model, self.clock()))
        return True

    async def _unload_alone(self, unload: Unload) -> None:
        if not await self._evict(unload) or unload.reason != "idle_ttl":
            return
        self.bus.publish("model_idle_unloaded", modelKey=unload.model)
        active = self.state.state.active_model
        if self.settings.keep_active_loaded and active == unload.model:
            self.load(active)

    async def _switch(self, load: Load, evicting: list[Unload]) -> None:
        started = time.monotonic()
        victims = [u.model for u in evicting]
        self.bus.publish(
            "model_switch_start", modelKey=load.model, victims=victims, reason=load.reason
        )
        for unload in evicting:
            if not await self._evict(unload):
                self._run(
                    self.core.load_failed(load.upstream, load.model, self.clock(), "unload failed")
                )
                self.bus.publish(
                    "model_switch_complete", modelKey=load.model, victims=victims, ok=False
                )
                return
        try:
            profile = self.state.profile(load.model)
            await self.models.load(load.model, profile.load_config or {})
        except GatewayError as exc:
            self._run(self.core.load_failed(load.upstream, load.model, self.clock(), exc.message))
            self.bus.publish(
                "model_switch_complete",
                modelKey=load.model,
                victims=victims,
                ok=False,
                error=exc.message,
            )
            return
        if self.metrics is not None:
            self.metrics.switched(load.model, load.reason)
        slots = self._slots(load.model)
        self._run(self.core.load_finished(load.upstream, load.model, self.clock(), slots))
        self.bus.publish(
            "model_switch_complete",
            modelKey=load.model,
            victims=victims,
            ok=True,
            seconds=round(time.monotonic() - started, 3),
        )

    def _slots(self, model: str) -> int | None:
        total = 0
        for instance in self.watcher.instances.values():
            if instance.model_key == model:
                parallel = instance.config.get("parallel")
                if not isinstance(parallel, int) or parallel < 1:
                    return None
                total += parallel
        return total or None

    def loaded(self, model: str) -> None:
        """lmgate loaded `model` outside the scheduler (the admin route): it is lmgate's own,
        so its idle TTL applies."""
        if self.core.ups[UPSTREAM].loading != model:
            self._run(self.core.load_finished(UPSTREAM, model, self.clock(), self._slots(model)))

    def load(self, model: str) -> None:
        """An explicit load (keeping the active model loaded), under the core's rules."""
        try:
            self._run(self.core.request_load(model, self.clock()))
        except LoadRefused as exc:
            log.info("model_load_refused", model=model, reason=exc.message)

    # -- reading -------------------------------------------------------------------------------

    def queue_json(self) -> dict[str, Any]:
        """`GET /debug/queue`: who waits for what, and each model's slots and idle TTL."""
        snap = self.core.snapshot(self.clock())
        return {
            "waiting": [
                {
                    "key": w.key,
                    "model": w.model,
                    "position": w.position,
                    "waitedMs": w.waited_ms,
                    "priority": w.priority,
                }
                for w in snap.waiting
            ],
            "models": [
                {
                    "model": m.model,
                    "slots": m.slots,
                    "inFlight": m.in_flight,
                    "waiting": m.waiting,
                    "draining": m.draining,
                    "pinned": m.pinned,
                    "owned": m.owned,
                    "ttlRemaining": None if m.ttl_remaining is None else round(m.ttl_remaining, 1),
                }
                for m in snap.models
            ],
            "upstreams": [
                {
                    "name": u.name,
                    "canLoad": u.can_load,
                    "loading": u.loading,
                    "switchingTo": u.switching_to,
                    "loaded": u.loaded,
                    "bytesUsed": u.bytes_used,
                    "memoryBudget": u.memory_budget,
                    "maxLoadedModels": u.max_loaded_models,
                }
                for u in snap.upstreams
            ],
            "perWorker": True,
        }

    # -- time -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """The tick loop: queue timeouts, drain limits, starvation caps, idle TTL."""
        while True:
            now = self.clock()
            try:
                self._run(self.core.tick(now))
                deadline = self.core.next_deadline(now)
            except Exception:  # a bug must not stop time for the gateway's lifetime
                log.exception("scheduler_tick_failed")
                deadline = None
            delay = TICK_MAX_S if deadline is None else min(TICK_MAX_S, deadline - now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.001, delay))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
