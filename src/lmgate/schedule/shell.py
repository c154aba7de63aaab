"""The scheduler in the request path: the async shell around the pure core.

One `SchedulerShell` per worker; the gateway has one `Scheduler`. With one worker the shell
holds it; with several the primary's shell hosts it (`host.py`) and the others reach it as a
`RemoteScheduler` (`remote.py`) through the same request path. As a proxy hook it submits
every inference request for a model the upstream offers; a request admitted on arrival goes on
at once (no task, no future: `submit` answered synchronously), the others wait on a future that
a later event resolves. Load and Unload actions run in background tasks (the core allows one
load at a time per upstream) and report back. As an observer it ends every request exactly
once, whichever way it left (answered, refused, failed, or its client gone while it waited).
A tick loop drives timeouts, drains and idle TTL from `next_deadline`; each model-list sync
feeds `observe`. A request carries its key's scheduling attributes (weight, priority, whether it
may cause loads, loads per hour); profiles' policies (slots, TTL, pin) reach the core at start
and with every state change, and `LMGATE_PRELOAD` is loaded after the first sync. Loads,
unloads, the tick loop and syncs act on the hosted core only (`local`); a worker that becomes
primary takes the core over, empty, from its next sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from lmgate.admin.models import ModelManager
from lmgate.errors import GatewayError
from lmgate.exchange import Exchange
from lmgate.hooks import EarlyAnswer, ProxyRequest, ResponseTap
from lmgate.observe.events import EventBus
from lmgate.schedule.core import Scheduler
from lmgate.schedule.errors import SchedulerRefusal
from lmgate.schedule.host import SOCKET, CoreHost
from lmgate.schedule.metrics import ScheduleMetrics
from lmgate.schedule.notify import wait_announcing, wants_comments
from lmgate.schedule.remote import UNAVAILABLE, RemoteScheduler
from lmgate.schedule.types import (
    LOAD_DENIED,
    STATUS,
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
from lmgate.store.state import ModelState, StateStore
from lmgate.upstream.sync import UpstreamWatcher
from lmgate.upstreams.affinity import Affinity
from lmgate.upstreams.management import Placing, preload_target
from lmgate.upstreams.members import Member, Upstreams
from lmgate.upstreams.routing import ROUTE, candidates, placed_by, spell
from lmgate.workers.slot import Worker

if TYPE_CHECKING:
    from lmgate.guard.keys import Principal

log = structlog.get_logger("lmgate.schedule")

_ID = "sched_id"  # the core's id for an exchange, in `Exchange.attributes`
TICK_MAX_S = 1.0  # idle TTL and the like are checked at least this often
LMSTUDIO_03_SLOTS = 1  # LM Studio 0.3 generates one answer at a time
PRINCIPAL = "lmgate.principal"  # where the guard leaves the caller's key in the scope
RELIST_MIN_S = 1.0  # refusals read the model list again at most this often
PRELOAD_TRIES = 3  # a preload refused while another load runs is tried again this often


def config_of(settings: Settings) -> SchedulerConfig:
    return SchedulerConfig(
        queue_max=settings.queue_max,
        queue_timeout=settings.queue_timeout,
        switch_max_wait=settings.switch_max_wait,
        default_slots=settings.model_slots or 4,
        model_ttl=settings.model_ttl,
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
        worker: Worker | None = None,
        upstreams: Upstreams | None = None,
    ) -> None:
        self.settings = settings
        self.watcher = watcher  # the primary's
        self.upstreams = upstreams or Upstreams(
            [Member(settings.upstream_configs()[0], watcher.client, watcher, models)]
        )
        self.primary = self.upstreams.primary.name
        self.upstreams.added.append(self._added)
        self.upstreams.changed.append(self._changed)
        self.upstreams.removed.append(self._gone)
        margin = settings.upstream_affinity_margin
        self.affinity = None if margin is None else Affinity(margin)
        self.models = models
        self.state = state
        self.bus = bus
        self.clock = clock
        self.worker = worker or Worker()
        self.specs = {m.name: self._spec_of(m) for m in self.upstreams}
        self.spec = self.specs[self.primary]
        self._profiles = state.state.profiles
        self._policies: dict[str, ModelPolicy] = self._policies_of(state.state)
        # hosted here when primary
        self.local = Scheduler(
            config_of(settings), list(self.specs.values()), policies=self._policies
        )
        # What the request path talks to: the local core, or the primary's through its socket.
        self.core: Scheduler | RemoteScheduler = self.local
        self.remote: RemoteScheduler | None = None
        self.host: CoreHost | None = None
        self._attach()
        self.metrics: ScheduleMetrics | None = None
        self._waiting: dict[str, asyncio.Future[Admit | Reject]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._preload_pending = bool(settings.preload)
        self._relist: asyncio.Task[None] | None = None  # one model-list read shared by refusals
        state.listeners.append(self._state_changed)

    # -- which core: hosted here, or the primary's ----------------------------------------------

    def _attach(self) -> None:
        worker = self.worker
        if not worker.shared or worker.run_dir is None:
            return  # one worker: the in-process core, no socket
        path = worker.run_dir / SOCKET
        if worker.primary:
            self.host = CoreHost(self, path)
            return
        self.remote = RemoteScheduler(
            path,
            self._run,
            queue_max=self.settings.queue_max,
            queue_timeout=self.settings.queue_timeout,
            clock=self.clock,
        )
        self.core = self.remote
        worker.on_primary.append(self._promoted)

    def _promoted(self) -> None:
        """This worker took slot 0 (the primary died): it hosts the core from now on. Requests
        it had sent without an answer yet go to the new core; `run` starts serving."""
        remote = self.remote
        if remote is None:
            return
        self.remote = None
        self.core = self.local
        self.host = CoreHost(self, remote.path)
        taken = remote.stop()
        self.synced()
        for request, arrival in taken:
            if not arrival.done():
                arrival.set_result(self._run(self.local.submit(request, self.clock()), request.id))

    # -- the upstream as the core sees it -------------------------------------------------------

    def _spec_of(self, member: Member) -> UpstreamSpec:
        """Limits and capability: switching needs on-demand loading and a load surface (LM
        Studio's SDK, `lms` or REST v1: `ModelManager.loadable`)."""
        caps, c = member.watcher.caps, member.config
        old = caps.kind == "lmstudio-0.3"
        return UpstreamSpec(
            member.name,
            can_load=self.settings.on_demand_load and member.models.loadable,
            max_loaded_models=c.max_loaded_models,
            memory_budget=c.memory_budget,
            default_slots=c.slots or (LMSTUDIO_03_SLOTS if old else None),
            max_concurrent=LMSTUDIO_03_SLOTS if old and c.slots is None else None,
            weight=c.weight,
            draining=member.draining,
        )

    def synced(self) -> None:
        """After each model-list sync: capability, the active model, what is loaded (every
        upstream listed so far; one upstream's sync costs the others nothing they had not)."""
        if self.remote is not None:
            return  # the host feeds the core from its own syncs
        now = self.clock()
        self.local.set_active(self.state.state.active_model)
        for member in self.upstreams:
            if member.watcher.synced_at is not None or member is self.upstreams.primary:
                self._observe(member, now)
        if self._preload_pending:
            self._preload_pending = False
            if self.worker.primary:
                self._spawn(self.preload(self.settings.preload))

    def _added(self, member: Member) -> None:
        """An upstream added at runtime (here, or through another worker and followed here):
        the core knows it now, and each of its syncs. A worker that does not host the core
        keeps its own (idle) one in step too, for the day it becomes primary."""
        member.watcher.synced.append(self.synced)
        self._observe(member, self.clock(), listing=False)

    def _changed(self, member: Member) -> None:
        """Drained or resumed: the core admits nothing new there, or does again."""
        self._observe(member, self.clock(), listing=False)

    def _gone(self, member: Member) -> None:
        """Removed: the core drops it, refusing requests that waited for it alone."""
        self.specs.pop(member.name, None)
        self._run(self.local.drop_upstream(member.name, self.clock()))

    def catch_up(self, names: frozenset[str] | None) -> None:
        """Another worker's request names an upstream this core does not know, or holds as
        draining: that worker may have seen a change (an addition, a resume) this one has not
        yet; the database says which."""
        if names is None:
            return
        ups = self.local.ups
        if any(name not in ups or ups[name].spec.draining for name in names):
            self.state.refresh()

    def _busy(self, upstream: str) -> int:
        """Answers running on `upstream` (this worker's core; 0 when another hosts it)."""
        up = self.local.ups.get(upstream)
        return 0 if up is None or self.remote is not None else up.in_flight

    def _observe(self, member: Member, now: float, *, listing: bool = True) -> None:
        spec = self._spec_of(member)
        if spec != self.specs.get(member.name):
            self.specs[member.name] = spec
            if member is self.upstreams.primary:
                self.spec = spec
            self._run(self.local.set_upstream(spec, now))
        if not listing:
            return
        loaded: dict[str, int | None] = {}
        for instance in member.watcher.instances.values():
            parallel = instance.config.get("parallel")
            slots = parallel if isinstance(parallel, int) and parallel > 0 else None
            if instance.model_key in loaded:
                before = loaded[instance.model_key]
                slots = None if before is None or slots is None else before + slots
            loaded[instance.model_key] = slots
        sizes = {
            m.key: m.size_bytes for m in member.watcher.models.values() if m.size_bytes is not None
        }
        self._run(self.local.observe(member.name, now, loaded, sizes))

    # -- profiles: the models' policies ---------------------------------------------------------

    def _policies_of(self, state: ModelState) -> dict[str, ModelPolicy]:
        """The core's policy for every profile that has one."""
        return {
            key: ModelPolicy(slots=p.slots, ttl=p.ttl, pinned=p.pinned)
            for key, p in state.profiles.items()
            if p.has_policy
        }

    def _state_changed(self, state: ModelState) -> None:
        """Told of every new state (an admin change here, or another worker's, read by the
        state store); profiles are compared by identity first, so most changes cost nothing."""
        if state.profiles is self._profiles:
            return
        self._profiles = state.profiles
        fresh = self._policies_of(state)
        old, self._policies = self._policies, fresh
        now = self.clock()
        for model in old.keys() | fresh.keys():
            policy = fresh.get(model)
            if policy != old.get(model):
                self._run(self.local.set_policy(model, policy, now))

    # -- the request path -----------------------------------------------------------------------

    def _model_key(self, name: str) -> str | None:
        model = self.watcher.find(name)
        return model.key if model is not None else None

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        """Admit the request, or make it wait its turn, or refuse it."""
        if request.kind is None or not ex.model:
            return None
        if not self.upstreams.settled:  # an upstream added moments ago: its models, first
            await self.upstreams.settle()
        keys: dict[str, str] | None = None  # several upstreams: where it may go, by which key
        if self.upstreams.routed:  # the upstreams that may take it, or a 404 saying why not
            keys = candidates(self.upstreams, ex.model)
            if self.affinity is not None:  # by the name the client used, whatever the keys
                kept = self.affinity.narrow(ex.key_name or "-", ex.model, keys.keys(), self._busy)
                if len(kept) < len(keys):
                    keys = {name: key for name, key in keys.items() if name in kept}
            model, keyed = placed_by(ex.model, keys)
        else:
            found = self._model_key(ex.model)
            if found is None:  # unknown to the upstream: its own answer says so
                return None
            model, keyed = found, None
        principal: Principal | None = request.scope.get(PRINCIPAL)
        if principal is not None and not principal.may_load:
            await self._refuse_jit_load(principal, model, keys)
        rid = str(next(self._ids))
        ex.attributes[_ID] = rid
        submitted = self._request_for(principal, rid, model, keys, keyed)
        verdict = self._run(self.core.submit(submitted, self.clock()), rid)
        told = False  # queued, and its place was told in the stream: no headers can follow
        if verdict is None and self.remote is not None:
            verdict = await self.remote.arrival(rid)  # the host's first answer; None: queued
        if verdict is None:
            early = wants_comments(request) if self.settings.queue_sse_comments else None
            verdict = await self._wait(ex, rid, model, early)
            told = early is not None and early.started
        if isinstance(verdict, Reject):
            del ex.attributes[_ID]
            raise SchedulerRefusal(verdict)
        if keys is not None:
            ex.attributes[ROUTE] = verdict.upstream
            spell(self.upstreams, ex.model, verdict.upstream, request)
            if self.affinity is not None:
                self.affinity.remember(ex.key_name or "-", ex.model, verdict.upstream)
        if told:
            return None
        if verdict.position:
            return QueueTap(verdict.position, verdict.waited)
        return None

    async def reroute(self, ex: Exchange, request: ProxyRequest, failed: str) -> str | None:
        """`failed` did not accept the request: its place there is given up, and it is admitted
        on another upstream that may take it (waiting its turn there if it must). None: no
        other upstream may, or the scheduler refused it there."""
        rid = ex.attributes.pop(_ID, None)
        ex.attributes.pop(ROUTE, None)
        if rid is not None:
            self._run(self.core.cancel(rid, self.clock()))
        if not ex.model:
            return None
        try:
            keys = candidates(self.upstreams, ex.model, exclude=failed)
        except GatewayError:
            return None
        model, keyed = placed_by(ex.model, keys)  # the relay sends the body with its key there
        principal: Principal | None = request.scope.get(PRINCIPAL)
        rid = str(next(self._ids))
        ex.attributes[_ID] = rid
        submitted = self._request_for(principal, rid, model, keys, keyed)
        verdict = self._run(self.core.submit(submitted, self.clock()), rid)
        if verdict is None and self.remote is not None:
            verdict = await self.remote.arrival(rid)
        if verdict is None:
            verdict = await self._wait(ex, rid, model, request.early)
        if isinstance(verdict, Reject):
            ex.attributes.pop(_ID, None)
            return None
        ex.attributes[ROUTE] = verdict.upstream
        return verdict.upstream

    @staticmethod
    def _request_for(
        principal: Principal | None,
        rid: str,
        model: str,
        keys: Mapping[str, str] | None = None,
        keyed: dict[str, str] | None = None,
    ) -> Request:
        """The request as the core sees it, with its key's attributes (no key: the defaults),
        the upstreams it may go to (`keys`; None: any) and, for an alias that names other
        keys on other upstreams, each one's (`keyed`)."""
        where = None if keys is None else frozenset(keys)
        if principal is None:
            return Request(rid, "-", model, upstreams=where, keys=keyed)
        p = principal
        return Request(
            rid,
            p.name,
            model,
            p.weight,
            p.priority,
            where,
            p.may_load,
            p.max_loads_per_hour,
            keyed,
        )

    async def _refuse_jit_load(
        self, principal: Principal, model: str, keys: Mapping[str, str] | None = None
    ) -> None:
        """A key that may not cause loads, where lmgate does not load models itself: LM
        Studio's JIT loading would load an unloaded model for it, so it is refused here, as
        the core refuses it when lmgate loads. The listing may be a few seconds old: it is
        read again before a refusal, at most once a second whatever the refusals."""
        if keys is not None:  # several upstreams: the listings the watchers keep decide
            members = [m for m in self.upstreams if m.name in keys]
            if any(self.specs[m.name].can_load or m.loaded(keys[m.name]) for m in members):
                return
        elif self.spec.can_load or self.watcher.is_loaded(model):
            return
        watcher = self.watcher
        synced = watcher.synced_at
        if keys is None and (synced is None or time.time() - synced > RELIST_MIN_S):
            relist = self._relist
            if relist is None or relist.done():
                relist = self._relist = asyncio.get_running_loop().create_task(watcher.poll())
            with contextlib.suppress(GatewayError):
                await asyncio.shield(relist)  # a client leaving does not cancel the others'
            if watcher.is_loaded(model):
                return
        raise SchedulerRefusal(
            Reject(
                "",
                STATUS[LOAD_DENIED],
                LOAD_DENIED,
                f"{model} is not loaded and key '{principal.name}' may not load models; "
                "use a loaded model",
            )
        )

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
        if self.metrics is not None and self.remote is None:
            self.metrics.queued(self.local)
        return verdict

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _evict(self, unload: Unload) -> bool:
        """Unload every instance of the model; the activation stays whatever happens."""
        try:
            await self._manager(unload.upstream).evict(unload.model)
        except GatewayError as exc:
            log.warning("model_unload_failed", model=unload.model, error=exc.message)
            self._run(self.local.unload_failed(unload.upstream, unload.model, self.clock()))
            return False
        if self.metrics is not None:
            self.metrics.evicted(unload.model, unload.reason)
        self._run(self.local.unloaded(unload.upstream, unload.model, self.clock()))
        return True

    async def _unload_alone(self, unload: Unload) -> None:
        if not await self._evict(unload) or unload.reason != "idle_ttl":
            return
        self.bus.publish("model_idle_unloaded", modelKey=unload.model)
        active = self.state.state.active_model
        if self.settings.keep_active_loaded and active == unload.model:
            self.load(active, keep=True, upstream=unload.upstream)

    async def _switch(self, load: Load, evicting: list[Unload]) -> bool:
        started = time.monotonic()
        victims = [u.model for u in evicting]
        self.bus.publish(
            "model_switch_start", modelKey=load.model, victims=victims, reason=load.reason
        )
        for unload in evicting:
            if not await self._evict(unload):
                self._run(
                    self.local.load_failed(load.upstream, load.model, self.clock(), "unload failed")
                )
                self.bus.publish(
                    "model_switch_complete",
                    modelKey=load.model,
                    victims=victims,
                    reason=load.reason,
                    ok=False,
                )
                return False
        try:
            profile = self.state.profile(load.model)
            await self._manager(load.upstream).load(load.model, profile.load_config or {})
        except GatewayError as exc:
            self._run(self.local.load_failed(load.upstream, load.model, self.clock(), exc.message))
            self.bus.publish(
                "model_switch_complete",
                modelKey=load.model,
                victims=victims,
                reason=load.reason,
                ok=False,
                error=exc.message,
            )
            return False
        if self.metrics is not None:
            self.metrics.switched(load.model, load.reason)
        slots = self._slots(load.model, load.upstream)
        self._run(self.local.load_finished(load.upstream, load.model, self.clock(), slots))
        self.bus.publish(
            "model_switch_complete",
            modelKey=load.model,
            victims=victims,
            reason=load.reason,
            ok=True,
            seconds=round(time.monotonic() - started, 3),
        )
        return True

    def _manager(self, upstream: str) -> ModelManager:
        member = self.upstreams.get(upstream)
        return self.models if member is None else member.models

    def _slots(self, model: str, upstream: str | None = None) -> int | None:
        member = self.upstreams.get(upstream or self.primary)
        watcher = self.watcher if member is None else member.watcher
        total = 0
        for instance in watcher.instances.values():
            if instance.model_key == model:
                parallel = instance.config.get("parallel")
                if not isinstance(parallel, int) or parallel < 1:
                    return None
                total += parallel
        return total or None

    def loaded(self, model: str, upstream: str | None = None) -> None:
        """lmgate loaded `model` outside the scheduler (the admin route; on the primary unless
        named): it is lmgate's own, so its idle TTL applies."""
        upstream = upstream or self.primary
        if self.remote is not None:
            self.remote.loaded(model)
        elif upstream in self.local.ups and self.local.ups[upstream].loading != model:
            slots = self._slots(model, upstream)
            self._run(self.local.load_finished(upstream, model, self.clock(), slots))

    def load(self, model: str, *, keep: bool = False, upstream: str | None = None) -> None:
        """An explicit load (keeping the active model loaded, where it was), under the core's
        rules."""
        try:
            self._run(self.local.request_load(model, self.clock(), upstream=upstream, keep=keep))
        except LoadRefused as exc:
            log.info("model_load_refused", model=model, reason=exc.message)

    # -- preload ------------------------------------------------------------------------------

    async def preload(self, names: Sequence[str]) -> None:
        """`LMGATE_PRELOAD`, in order, once the upstream has been listed: each load obeys the
        scheduler's rules like an admin load; a refusal or a failure is logged and published
        (`model_preload`), never fatal. Where lmgate does not load on demand, the model is
        loaded as the admin route loads it (and is lmgate's own all the same)."""
        for name in names:
            at: dict[str, str] = {}
            try:
                status, reason = await self._preload_one(name, at)
            except Exception as exc:  # a bug must not stop the others, nor the gateway
                log.exception("model_preload_crashed", model=name)
                status, reason = "failed", str(exc)
            level = log.info if status in ("loaded", "already_loaded") else log.warning
            level("model_preload", model=name, status=status, reason=reason, **at)
            self.bus.publish("model_preload", modelKey=name, status=status, reason=reason, **at)

    async def _preload_one(self, name: str, at: dict[str, str]) -> tuple[str, str | None]:
        """One entry, on the upstream an admin load would choose (`NAME:model`: on NAME),
        named in `at` with several upstreams."""
        target = preload_target(self.upstreams, name, Placing.of(self))
        if isinstance(target, str):
            return "refused", target
        member, model = target
        upstream = member.name
        if self.upstreams.routed:
            at["upstream"] = upstream
        if member.loaded(model):
            return "already_loaded", None
        if not await member.models.loadable_now():
            return "refused", "this upstream cannot be told to load models; load it there"
        if not self.specs.get(upstream, self.spec).can_load:
            try:
                await member.models.load(model, self.state.profile(model).load_config or {})
            except GatewayError as exc:
                return "failed", exc.message
            self.loaded(model, upstream)
            return "loaded", None
        for attempt in range(PRELOAD_TRIES):
            try:
                actions = self.local.request_load(model, self.clock(), upstream=upstream)
            except LoadRefused as exc:
                if not self._loading() or attempt == PRELOAD_TRIES - 1:
                    return "refused", exc.message
                await self._load_ended()  # another load runs: try again once it is over
                if member.loaded(model):
                    return "already_loaded", None
                continue
            load = next(a for a in actions if isinstance(a, Load))
            evicting = [a for a in actions if isinstance(a, Unload)]
            ok = await self._switch(load, evicting)
            return (
                ("loaded", None) if ok else ("failed", "the load failed; see model_switch_complete")
            )
        return "refused", "a load was running"  # not reached: the last try returns

    def _loading(self) -> bool:
        return any(
            up.loading is not None or up.switch is not None for up in self.local.ups.values()
        )

    async def _load_ended(self) -> None:
        """Until the background work running now (the load among it) is over."""
        me = asyncio.current_task()
        others = [t for t in self._tasks if t is not me]
        if others:
            await asyncio.wait(others, timeout=self.settings.load_timeout)

    # -- reading -------------------------------------------------------------------------------

    async def queue_json(self) -> dict[str, Any]:
        """`GET /debug/queue`: who waits for what, and each model's slots and idle TTL, from
        the gateway's one core wherever it is hosted."""
        if self.remote is None:
            return self.queue_local() | {"worker": self.worker.as_json()}
        shared = await self.remote.snapshot()
        if shared is None:
            raise GatewayError(
                "the worker holding the queue is not reachable right now; try again",
                code=UNAVAILABLE,
                headers={"Retry-After": "1"},
            )
        return shared | {"worker": self.worker.as_json()}  # the worker that answered

    def queue_local(self, waiting_max: int | None = None) -> dict[str, Any]:
        """The hosted core's picture; `waiting_max` bounds the list (for another worker)."""
        snap = self.local.snapshot(self.clock())
        waiting = snap.waiting if waiting_max is None else snap.waiting[:waiting_max]
        return {
            "waiting": [
                {
                    "key": w.key,
                    "model": w.model,
                    "position": w.position,
                    "waitedMs": w.waited_ms,
                    "priority": w.priority,
                }
                for w in waiting
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
            "waitingTotal": len(snap.waiting),
            "perWorker": False,  # one queue for the whole gateway, whichever worker answers
            "hostWorker": self.worker.as_json(),
        }

    # -- time -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """A client of the primary's core until this worker becomes primary; then (and with one
        worker, from the start) the tick loop: queue timeouts, drain limits, starvation caps,
        idle TTL."""
        if self.remote is not None:
            await self.remote.run()  # returns once `_promoted` stopped it
        if self.host is not None:
            try:
                await self.host.start()
            except OSError:  # the other workers answer 503 until a primary serves again
                log.exception("scheduler_host_failed")
        while True:
            now = self.clock()
            try:
                self._run(self.local.tick(now))
                deadline = self.local.next_deadline(now)
            except Exception:  # a bug must not stop time for the gateway's lifetime
                log.exception("scheduler_tick_failed")
                deadline = None
            delay = TICK_MAX_S if deadline is None else min(TICK_MAX_S, deadline - now)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.001, delay))

    async def close(self) -> None:
        if self.remote is not None:
            self.remote.stop()
        if self.host is not None:
            await self.host.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
