"""Loading the active model again when it disappears upstream (autoReload). Loading a
requested model on demand is the scheduler's job (`lmgate.schedule.shell`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from lmgate.admin.models import ModelManager
from lmgate.errors import GatewayError
from lmgate.store.state import StateStore
from lmgate.upstream.inventory import Instance

log = structlog.get_logger("lmgate.models")


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
