"""The parts of one running gateway, built once by `create_app` and shared by its routes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from lmgate.admin.downloads import DownloadManager
from lmgate.admin.models import ModelManager
from lmgate.admin.on_demand import ActiveModelKeeper
from lmgate.exchange import Observer
from lmgate.guard.security import Security
from lmgate.hooks import ProxyHook
from lmgate.loading.choose import build_surfaces
from lmgate.observe.events import EventBus
from lmgate.observe.hub import Observability
from lmgate.observe.inference_events import InferenceEvents
from lmgate.observe.prometheus import PrometheusMetrics
from lmgate.observe.stats import Stats
from lmgate.schedule.metrics import ScheduleMetrics
from lmgate.schedule.shell import SchedulerShell
from lmgate.settings import Settings
from lmgate.shutdown import Drain
from lmgate.store.db import Database
from lmgate.store.state import StateStore
from lmgate.upstream.client import UpstreamClient
from lmgate.upstream.power import UpstreamPower
from lmgate.upstream.sync import UpstreamWatcher
from lmgate.upstreams.members import Upstreams
from lmgate.workers.slot import Worker


@dataclass(slots=True)
class Gateway:
    settings: Settings
    db: Database
    state: StateStore
    upstream: UpstreamClient
    bus: EventBus
    stats: Stats
    prometheus: PrometheusMetrics
    inference_events: InferenceEvents
    obs: Observability
    watcher: UpstreamWatcher
    models: ModelManager
    security: Security
    drain: Drain
    scheduler: SchedulerShell
    upstreams: Upstreams  # every upstream; `upstream`/`watcher`/`models` are its primary's
    worker: Worker = field(default_factory=Worker)
    power: UpstreamPower = field(default_factory=UpstreamPower)  # Wake-on-LAN, idle sleep
    downloads: DownloadManager | None = None
    # Background loops (model sync, log tailing, batched writers...), started by the lifespan.
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def proxy_hooks(self) -> list[ProxyHook]:
        """Run in this order before every proxied request: refuse first (a stopping gateway
        before anything is counted), then prepare."""
        hooks: list[ProxyHook] = [self.drain, *self.security.hooks()]
        hooks.extend(self.power.hooks())  # holds requests while the upstream wakes
        hooks.append(self.scheduler)  # waits for a slot (and a load) once the request may go
        hooks.extend(self.obs.hooks())  # usage accounting last: it sees the final body
        return hooks

    def observers(self) -> list[Observer]:
        """Told of every exchange at its start and finish."""
        fresh: list[Observer] = [self.state] if self.worker.shared else []
        return [
            *fresh,  # first: another worker's activation applies to this very request
            *self.obs.observers(),
            *self.security.observers(),
            *self.power.observers(),
            self.scheduler,  # frees the request's slot or queue place, however it ended
        ]

    async def start(self) -> None:
        await self.upstream.start()
        await self.upstreams.start()
        self._tasks = [asyncio.create_task(loop()) for loop in self.background]
        await self.upstreams.settle()  # serve once the first model lists are read

    async def stop(self) -> None:
        self.drain.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.scheduler.close()
        await self.power.close()
        await self.upstream.close()
        await self.upstreams.close()
        self.security.close()
        self.obs.close()
        self.state.close()
        self.db.close()

    @classmethod
    def build(cls, settings: Settings, worker: Worker | None = None) -> Gateway:
        worker = worker or Worker()
        db = Database(settings.data_dir)
        state = StateStore(db, follow=worker.shared)
        obs = Observability.build(settings, db, state, worker)
        bus = obs.bus
        upstream = UpstreamClient(settings)
        stats = obs.stats
        watcher = UpstreamWatcher(upstream, bus, interval=settings.sync_interval)
        watcher.on_embedding = state.use_loaded_embedding
        models = ModelManager(
            upstream,
            watcher,
            state,
            bus,
            stats,
            load_timeout=settings.load_timeout,
            surfaces=build_surfaces(settings, upstream, watcher),
        )
        watcher.listeners.append(
            ActiveModelKeeper(
                models,
                state,
                auto_reload=settings.auto_reload,
                primary=lambda: worker.primary,  # one reload per gateway, not one per worker
            )
        )
        upstreams = Upstreams.build(settings, (upstream, watcher, models), state, bus, stats)
        upstreams.metrics(obs.prometheus.registry)
        scheduler = SchedulerShell(
            settings, watcher, models, state, bus, worker=worker, upstreams=upstreams
        )
        scheduler.metrics = ScheduleMetrics(obs.prometheus.registry, obs.models)
        for member in upstreams:
            member.watcher.synced.append(scheduler.synced)
        gw = cls(
            settings=settings,
            db=db,
            state=state,
            upstream=upstream,
            bus=bus,
            stats=stats,
            prometheus=obs.prometheus,
            inference_events=obs.inference_events,
            obs=obs,
            watcher=watcher,
            models=models,
            security=Security.build(settings, db, worker),
            drain=Drain(obs.requests, settings.shutdown_grace),
            scheduler=scheduler,
            upstreams=upstreams,
            worker=worker,
            power=UpstreamPower.build(
                settings,
                upstreams,
                bus,
                alone=not worker.shared,
                run_dir=worker.run_dir,
            ),
        )
        gw.background.append(watcher.run)
        gw.background.extend(gw.power.loops())
        gw.downloads = DownloadManager(
            upstream, watcher, bus, poll_seconds=settings.download_poll_seconds
        )
        gw.background.append(gw.downloads.run)
        gw.background.append(scheduler.run)
        if settings.on_demand_load:  # the scheduler loads through whichever surface works
            gw.background.append(lambda: models.watch_surfaces(settings.sync_interval))
        obs.watcher = watcher
        gw.background.extend(obs.loops())
        if worker.shared and not worker.primary:
            gw.background.append(worker.contend)
        return gw


def gateway_of(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw
