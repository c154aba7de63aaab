"""Loading models when they are needed: for a request naming an unloaded model (onDemandLoad,
with the model's stored profile instead of LM Studio's JIT defaults), and again for the active
model when it disappears upstream (autoReload)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from lmgate.admin.models import ModelManager
from lmgate.errors import GatewayError
from lmgate.exchange import Exchange
from lmgate.proxy.hooks import ProxyRequest, ResponseTap
from lmgate.store.state import StateStore
from lmgate.upstream.inventory import Instance
from lmgate.upstream.sync import UpstreamWatcher

log = structlog.get_logger("lmgate.models")


class OnDemandLoader:
    """A proxy hook. One load serves every request waiting for the same model."""

    def __init__(
        self,
        manager: ModelManager,
        watcher: UpstreamWatcher,
        state: StateStore,
        *,
        max_loaded: int | None,
    ) -> None:
        self.manager = manager
        self.watcher = watcher
        self.state = state
        self.max_loaded = max_loaded
        self.last_used: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        if ex.model is None or request.kind is None:
            return None
        model = self.watcher.find(ex.model)
        if model is None:
            return None
        self.last_used[model.key] = time.monotonic()
        if model.loaded or not self.watcher.caps.model_management:
            return None
        async with self._lock:
            if not self.watcher.is_loaded(model.key):
                await self._make_room(keep=model.key)
                profile = self.state.profile(model.key)
                await self.manager.load(model.key, profile.load_config or {})
        return None

    async def _make_room(self, keep: str) -> None:
        if self.max_loaded is None:
            return
        while True:
            loaded = {i.model_key for i in self.watcher.instances.values()} - {keep}
            if len(loaded) < self.max_loaded:
                return
            victim = min(loaded, key=lambda k: self.last_used.get(k, 0.0))
            log.info("evicting_model", model=victim, reason="maxLoadedModels")
            await self.manager.unload(model_key=victim, instance_id=None, everything=False)


class ActiveModelKeeper:
    """A sync listener: when the active model's last instance goes away, say so, and with
    autoReload load it again with its stored profile."""

    def __init__(
        self,
        manager: ModelManager,
        state: StateStore,
        *,
        auto_reload: bool,
        primary: Callable[[], bool] = lambda: True,
    ) -> None:
        self.manager = manager
        self.state = state
        self.auto_reload = auto_reload
        self.primary = primary
        self._reload: asyncio.Task[None] | None = None

    async def __call__(self, kind: str, instance: Instance) -> None:
        active = self.state.state.active_model
        if kind != "model_unloaded" or active != instance.model_key:
            return
        if self.manager.watcher.is_loaded(active):
            return
        self.manager.bus.publish("active_model_unloaded", modelKey=active, reload=self.auto_reload)
        if not self.auto_reload or not self.primary():
            return
        if self._reload is None or self._reload.done():
            self._reload = asyncio.create_task(self._load_again(active))

    async def _load_again(self, key: str) -> None:
        try:
            await self.manager.load(key, self.state.profile(key).load_config or {})
        except GatewayError as exc:
            log.warning("auto_reload_failed", model=key, error=exc.message)
