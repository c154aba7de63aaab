"""Real model management: load and unload through LM Studio's REST v1 API.

Loads are idempotent (same config: nothing happens; another config: unload, then load, unless
a new instance is asked for) and coalesced (concurrent loads of one model share one upstream
call). Gateway state changes only after the upstream said yes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from lmgate.errors import GatewayError, NotFound
from lmgate.observe.events import EventBus
from lmgate.observe.stats import Stats
from lmgate.store.state import StateStore
from lmgate.upstream.client import UpstreamClient
from lmgate.upstream.inventory import Instance
from lmgate.upstream.load_config import from_rest, matches, to_rest
from lmgate.upstream.sync import UpstreamWatcher

PROGRESS_EVERY_S = 2.0
UNLOAD_LIMIT_S = 60.0


@dataclass(slots=True)
class LoadOutcome:
    model_key: str
    instance_id: str
    load_seconds: float
    applied: dict[str, Any]
    not_applied: dict[str, str]
    already_loaded: bool = False
    replaced: list[str] = field(default_factory=list)


class ModelManager:
    def __init__(
        self,
        client: UpstreamClient,
        watcher: UpstreamWatcher,
        state: StateStore,
        bus: EventBus,
        stats: Stats,
        *,
        load_timeout: float,
    ) -> None:
        self.client = client
        self.watcher = watcher
        self.state = state
        self.bus = bus
        self.stats = stats
        self.load_timeout = load_timeout
        self._loads: dict[tuple[str, bytes, bool], asyncio.Task[LoadOutcome]] = {}

    async def load(
        self, model_key: str, load_config: dict[str, Any], *, new_instance: bool = False
    ) -> LoadOutcome:
        """Load `model_key` upstream; concurrent identical loads share one upstream call."""
        self.bus.publish("model_load_start", modelKey=model_key, loadConfig=load_config)
        payload, not_applied = to_rest(load_config)
        key = (model_key, orjson.dumps(payload, option=orjson.OPT_SORT_KEYS), new_instance)
        task = self._loads.get(key)
        if task is None:
            task = asyncio.create_task(self._load(model_key, payload, not_applied, new_instance))
            self._loads[key] = task
            task.add_done_callback(lambda _: self._loads.pop(key, None))
        outcome = await asyncio.shield(task)
        self.bus.publish(
            "model_load_complete",
            modelKey=model_key,
            instanceId=outcome.instance_id,
            loaded=True,
            alreadyLoaded=outcome.already_loaded,
            loadTimeSeconds=outcome.load_seconds,
            applied=outcome.applied,
            notApplied=outcome.not_applied,
        )
        return outcome

    async def _load(
        self,
        model_key: str,
        payload: dict[str, Any],
        not_applied: dict[str, str],
        new_instance: bool,
    ) -> LoadOutcome:
        await self._refresh()
        model = self.watcher.find(model_key)
        replaced: list[str] = []
        if model is not None and model.instances and not new_instance:
            for instance in model.instances:
                if matches(payload, instance.config):
                    return LoadOutcome(
                        model_key, instance.id, 0.0, from_rest(instance.config), not_applied, True
                    )
            for instance in model.instances:  # loaded with another config: replace it
                await self._unload_instance(instance)
                replaced.append(instance.id)
        self.stats.current_operation = f"loading {model_key}"
        progress = asyncio.create_task(self._progress(model_key))
        try:
            answer = await self.client.call(
                "POST",
                "/api/v1/models/load",
                {"model": model_key, **payload, "echo_load_config": True},
                limit_s=self.load_timeout,
            )
        except GatewayError as exc:
            self.bus.publish(
                "error", operation="model_load", modelKey=model_key, message=exc.message
            )
            raise
        finally:
            progress.cancel()
            self.stats.current_operation = None
        config = answer.get("load_config") or payload
        instance = Instance(str(answer.get("instance_id") or model_key), model_key, config)
        self.watcher.record(added=instance)
        outcome = LoadOutcome(
            model_key,
            instance.id,
            float(answer.get("load_time_seconds") or 0.0),
            from_rest(config),
            not_applied,
            replaced=replaced,
        )
        self.bus.publish(
            "model_loaded",
            modelKey=model_key,
            instanceId=instance.id,
            config=config,
            source="gateway",
        )
        return outcome

    async def _progress(self, model_key: str) -> None:
        """REST loads report no progress; tell the debug stream the load is still going."""
        started = time.monotonic()
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            self.bus.publish(
                "model_load_progress",
                modelKey=model_key,
                elapsedSeconds=round(time.monotonic() - started, 1),
            )

    async def _refresh(self) -> None:
        await self.watcher.poll()

    async def _unload_instance(self, instance: Instance) -> None:
        await self.client.call(
            "POST", "/api/v1/models/unload", {"instance_id": instance.id}, limit_s=UNLOAD_LIMIT_S
        )
        self.watcher.record(removed=instance.id)
        self.bus.publish(
            "model_unloaded",
            modelKey=instance.model_key,
            instanceId=instance.id,
            source="gateway",
        )

    async def evict(self, model_key: str) -> None:
        """Unload every instance of a model to make room or for idleness. Unlike `unload`, the
        activation stays: the next request that needs the active model loads it again."""
        await self._refresh()
        model = self.watcher.find(model_key)
        for instance in model.instances if model is not None else ():
            await self._unload_instance(instance)

    async def unload(
        self, *, model_key: str | None, instance_id: str | None, everything: bool
    ) -> tuple[list[str], bool]:
        """Unload instances upstream; clear the activation if the active model went away.
        Returns (unloaded instance ids, whether the active model was cleared)."""
        await self._refresh()
        if everything:
            targets = list(self.watcher.instances.values())
        elif instance_id is not None:
            found = self.watcher.instances.get(instance_id)
            if found is None:
                raise NotFound(f"no loaded instance '{instance_id}'", code="instance_not_found")
            targets = [found]
        else:
            model = self.watcher.find(model_key or "")
            if model is None:
                raise NotFound(f"the upstream has no model '{model_key}'", code="model_not_found")
            targets = list(model.instances)
        for instance in targets:
            await self._unload_instance(instance)
        active = self.state.state.active_model
        still_there = active is not None and any(
            i.model_key == active or i.id == active for i in self.watcher.instances.values()
        )
        gone = (
            active is not None
            and not still_there
            and (everything or model_key == active or any(i.model_key == active for i in targets))
        )
        if gone:
            await self.state.clear(active)
        return [i.id for i in targets], gone
