"""Keeps the gateway's view of the upstream current: capabilities and loaded instances.

A background loop polls the model list (default every 5 s, backing off while the upstream is
unreachable) and turns differences into `model_loaded` / `model_unloaded` events. Changes the
gateway made itself are recorded first, so only loads and unloads done elsewhere (LM Studio's
UI, `lms`, JIT loading, TTL eviction) are reported with `source: "upstream"`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

import structlog

from lmgate.errors import GatewayError
from lmgate.observe.events import EventBus
from lmgate.redaction import redact_url
from lmgate.upstream import inventory
from lmgate.upstream.capabilities import Capabilities, detect
from lmgate.upstream.client import UpstreamClient
from lmgate.upstream.inventory import Instance, UpstreamModel

log = structlog.get_logger("lmgate.sync")
CAPABILITY_REFRESH_S = 60.0
MAX_BACKOFF_S = 60.0

Listener = Callable[[str, Instance], Awaitable[None]]


class UpstreamWatcher:
    def __init__(self, client: UpstreamClient, bus: EventBus, *, interval: float) -> None:
        self.client = client
        self.bus = bus
        self.interval = interval
        self.name: str | None = None  # with several upstreams: this one's, in events and logs
        self.caps = Capabilities()
        self.models: dict[str, UpstreamModel] = {}
        self.instances: dict[str, Instance] = {}
        self.synced_at: float | None = None
        self.last_error: str | None = None
        self.listeners: list[Listener] = []
        self.synced: list[Callable[[], None]] = []  # told after every successful poll
        self.failed: list[Callable[[], None]] = []  # told after every failed one
        # told the one loaded embedding model (None: none or several) whenever the view changes
        self.on_embedding: Callable[[str | None], None] | None = None
        self._lock = asyncio.Lock()

    async def capabilities(self, *, refresh: bool = False) -> Capabilities:
        """The capabilities, detected now if never checked or if asked to."""
        if refresh or not self.caps.checked_at:
            caps = await detect(self.client)
            if caps.as_json() | {"checkedAt": 0, "latencyMs": 0} != self.caps.as_json() | {
                "checkedAt": 0,
                "latencyMs": 0,
            }:
                self.bus.publish("upstream_state", **caps.as_json())
            self.caps = caps
        return self.caps

    def find(self, name: str) -> UpstreamModel | None:
        """A model by key, or the model an instance id belongs to."""
        if name in self.models:
            return self.models[name]
        instance = self.instances.get(name)
        return self.models.get(instance.model_key) if instance else None

    def is_loaded(self, name: str) -> bool:
        model = self.find(name)
        return name in self.instances or (model is not None and model.loaded)

    def record(self, added: Instance | None = None, removed: str | None = None) -> None:
        """A change the gateway made itself: applied to the view now, never re-reported."""
        if added is not None:
            self.instances[added.id] = added
        if removed is not None:
            self.instances.pop(removed, None)
        self._rebuild_models()

    def sole_embedding(self) -> str | None:
        """The embedding model loaded upstream, when exactly one is."""
        loaded = [m.key for m in self.models.values() if m.type == "embedding" and m.loaded]
        return loaded[0] if len(loaded) == 1 else None

    def _tell_embedding(self) -> None:
        if self.on_embedding is not None:
            self.on_embedding(self.sole_embedding())

    def _rebuild_models(self) -> None:
        self._rebuild()
        self._tell_embedding()

    def _rebuild(self) -> None:
        for key, model in list(self.models.items()):
            own = tuple(i for i in self.instances.values() if i.model_key == key)
            if own != model.instances:
                self.models[key] = dataclasses.replace(model, instances=own)

    async def poll(self) -> None:
        """Read the model list once and report what changed since the last look."""
        async with self._lock:
            caps = await self.capabilities()
            models = await inventory.fetch(self.client, caps)
            fresh = inventory.loaded_instances(models)
            first = self.synced_at is None
            previous, self.instances = self.instances, fresh
            self.models = {m.key: m for m in models}
            self.synced_at = time.time()
            self.last_error = None
            self._tell_embedding()
        for after in self.synced:
            after()
        if first:
            return
        for iid in fresh.keys() - previous.keys():
            await self._changed("model_loaded", fresh[iid])
        for iid in previous.keys() - fresh.keys():
            await self._changed("model_unloaded", previous[iid])

    async def _changed(self, kind: str, instance: Instance) -> None:
        self.bus.publish(
            kind,
            modelKey=instance.model_key,
            instanceId=instance.id,
            config=instance.config,
            source="upstream",
            **({"upstream": self.name} if self.name else {}),
        )
        for listener in self.listeners:
            await listener(kind, instance)

    async def run(self) -> None:
        """The background loop: poll, back off while failing, re-detect capabilities."""
        delay = self.interval
        while True:
            try:
                if (
                    time.time() - self.caps.checked_at > CAPABILITY_REFRESH_S
                    or not self.caps.reachable
                ):
                    await self.capabilities(refresh=True)
                await self.poll()
                delay = self.interval
            except GatewayError as exc:
                if self.last_error != exc.message:
                    shown = redact_url(self.client.base)
                    log.warning(
                        "upstream_sync_failed", upstream=shown, name=self.name, error=exc.message
                    )
                self.last_error = exc.message
                for told in self.failed:
                    told()
                delay = min(max(delay * 2, self.interval), MAX_BACKOFF_S)
                await self.capabilities(refresh=True)
            except Exception:  # a bug must not end the loop for the gateway's lifetime
                log.exception("upstream_sync_crashed")
                delay = min(max(delay * 2, self.interval), MAX_BACKOFF_S)
            await asyncio.sleep(delay)
