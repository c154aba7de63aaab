"""Real model management: load and unload through the best surface the upstream offers.

Each load goes through one surface (`lmgate.loading`: the SDK, `lms`, or REST v1), chosen for
the fields asked for, and the answer says field by field what the upstream applied. Loads are
idempotent (same request: nothing happens; another config: unload, then load, unless a new
instance is asked for) and coalesced (concurrent identical loads share one upstream call).
Gateway state changes only after the upstream said yes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from lmgate.errors import GatewayError, NotFound, UpstreamError
from lmgate.loading.choose import Chooser
from lmgate.loading.errors import LoadFailed
from lmgate.loading.fields import REST, flatten, needs
from lmgate.loading.layers import convert
from lmgate.loading.surface import LoadSpec, LoadSurface, SurfaceLoad
from lmgate.observe.events import EventBus
from lmgate.observe.stats import Stats
from lmgate.store.state import StateStore
from lmgate.upstream.client import UpstreamClient
from lmgate.upstream.inventory import Instance
from lmgate.upstream.load_config import REST_FIELDS, matches
from lmgate.upstream.sync import UpstreamWatcher

log = structlog.get_logger("lmgate.models")
PROGRESS_EVERY_S = 2.0
CPU_THREADS_AS = (
    "applied as a per-request default: stored in this model's defaultInference and sent as "
    "`cpu_threads` with its chat and completions requests (LM Studio sets CPU threads per "
    "prediction, not per load)"
)


@dataclass(slots=True)
class LoadOutcome:
    model_key: str
    instance_id: str
    load_seconds: float
    applied: dict[str, Any]
    not_applied: dict[str, str]
    already_loaded: bool = False
    replaced: list[str] = field(default_factory=list)
    surface: str | None = None  # None: nothing was loaded (an instance already matched)
    effective: dict[str, Any] | None = None
    applied_as: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Request:
    """One load as asked: the config without what travels beside it."""

    model: str
    config: dict[str, Any]
    identifier: str | None
    ttl: int | None
    cpu_threads: int | None
    surface: str | None
    new_instance: bool

    @classmethod
    def of(
        cls,
        model: str,
        load_config: dict[str, Any],
        identifier: str | None,
        surface: str | None,
        new_instance: bool,
    ) -> _Request:
        config = {k: v for k, v in load_config.items() if k not in ("ttl", "cpuThreads")}
        ttl, threads = load_config.get("ttl"), load_config.get("cpuThreads")
        return cls(model, config, identifier, ttl, threads, surface, new_instance)

    def key(self) -> bytes:
        return orjson.dumps(
            [
                self.model,
                self.config,
                self.identifier,
                self.ttl,
                self.cpu_threads,
                self.surface,
                self.new_instance,
            ],
            option=orjson.OPT_SORT_KEYS,
        )

    def wanted(self, config: dict[str, Any]) -> dict[str, Any]:
        """Every field asked of a surface (dotted names), `ttl` and `identifier` included."""
        out = flatten(config)
        if self.ttl is not None:
            out["ttl"] = self.ttl
        if self.identifier is not None:
            out["identifier"] = self.identifier
        return out


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
        surfaces: list[LoadSurface],
    ) -> None:
        self.client = client
        self.watcher = watcher
        self.state = state
        self.bus = bus
        self.stats = stats
        self.load_timeout = load_timeout
        self.chooser = Chooser(surfaces)
        self._loadable = False  # a surface could load at the last look (`loadable_now`)
        self._loads: dict[bytes, asyncio.Task[LoadOutcome]] = {}
        # What lmgate loaded each instance with (request key, outcome): the listing shows
        # only part of a config, so an identical request is recognised by this.
        self._made: dict[str, tuple[bytes, LoadOutcome]] = {}

    def _publish(self, kind: str, **data: Any) -> None:
        """Events name the upstream once there are several (`watcher.name`)."""
        if self.watcher.name:
            data["upstream"] = self.watcher.name
        self.bus.publish(kind, **data)

    @property
    def loadable(self) -> bool:
        """For readers that cannot wait (the scheduler): a surface could load at the last
        look, or REST v1 is there (known at once from the capabilities, so a gateway that
        just started does not wait for the slower SDK and `lms` checks)."""
        return self._loadable or self.watcher.caps.native_v1

    async def loadable_now(self) -> bool:
        """Whether any surface can load on this upstream now; those following the upstream
        (the scheduler) are told when `loadable` changes."""
        before = self.loadable
        self._loadable = bool(await self.chooser.available())
        if self.loadable != before and self.watcher.synced_at is not None:
            for after in self.watcher.synced:  # before the first sync, that sync tells
                after()
        return self._loadable

    async def can_manage(self) -> bool:
        """Whether any surface can load on this upstream now. An upstream that refuses the
        gateway's token is an error, not "cannot manage": answering with a manual workflow
        would hide the cause."""
        if await self.loadable_now():
            return True
        caps = self.watcher.caps
        if caps.reachable and caps.auth_required:
            said = caps.last_error or "no reason given"
            raise UpstreamError(
                "LM Studio refused the gateway's credentials (LMGATE_UPSTREAM_TOKEN), so no "
                f"load surface works: {await self.chooser.summary()}; LM Studio said: {said}",
                code="upstream_auth_failed",
            )
        return False

    async def watch_surfaces(self, interval: float) -> None:
        """Background: keep `loadable` current (each surface caches its own check)."""
        while True:
            try:
                await self.loadable_now()
            except Exception:  # a surface's bug must not end the loop
                log.exception("load_surfaces_check_failed")
            await asyncio.sleep(interval)

    async def load(
        self,
        model_key: str,
        load_config: dict[str, Any],
        *,
        new_instance: bool = False,
        identifier: str | None = None,
        surface: str | None = None,
    ) -> LoadOutcome:
        """Load `model_key` upstream; concurrent identical loads share one upstream call."""
        self._publish("model_load_start", modelKey=model_key, loadConfig=load_config)
        request = _Request.of(model_key, load_config, identifier, surface, new_instance)
        key = request.key()
        task = self._loads.get(key)
        if task is None:
            task = asyncio.create_task(self._load(request, key))
            self._loads[key] = task
            task.add_done_callback(lambda _: self._loads.pop(key, None))
        outcome = await asyncio.shield(task)
        self._publish(
            "model_load_complete",
            modelKey=model_key,
            instanceId=outcome.instance_id,
            loaded=True,
            surface=outcome.surface,
            alreadyLoaded=outcome.already_loaded,
            loadTimeSeconds=outcome.load_seconds,
            applied=outcome.applied,
            notApplied=outcome.not_applied,
            appliedAs=outcome.applied_as,
        )
        return outcome

    def _existing(
        self, request: _Request, key: bytes, wanted: dict[str, Any]
    ) -> LoadOutcome | None:
        """An instance already running as asked, if any."""
        model = self.watcher.find(request.model)
        for instance in model.instances if model is not None else ():
            if request.identifier is not None and instance.id != request.identifier:
                continue
            made = self._made.get(instance.id)
            if made is not None and made[0] == key:
                outcome = made[1]
                return LoadOutcome(
                    request.model,
                    instance.id,
                    0.0,
                    dict(outcome.applied),
                    dict(outcome.not_applied),
                    already_loaded=True,
                    surface=None,
                    effective=outcome.effective,
                    applied_as=dict(outcome.applied_as),
                )
            listed = {k for k in wanted if k in REST_FIELDS}
            shown = set(wanted) - {"identifier"} <= listed
            if made is None and shown and matches(wanted, instance.config):
                return LoadOutcome(
                    request.model,
                    instance.id,
                    0.0,
                    {k: wanted[k] for k in listed},
                    {},
                    already_loaded=True,
                    effective=dict(instance.config),
                )
        return None

    async def _load(self, request: _Request, key: bytes) -> LoadOutcome:
        await self._refresh()
        model = self.watcher.find(request.model)
        caps = await self.watcher.capabilities()
        source = "layer count from " + ("/api/v1/models" if caps.native_v1 else "/api/v0/models")
        converted = convert(request.config, model.layers if model else None, source)
        wanted = request.wanted(converted.config)
        if not request.new_instance and (found := self._existing(request, key, wanted)):
            return self._with_extras(found, request, converted.applied_as, converted.not_applied)
        choice = await self.chooser.choose(wanted, request.surface)
        replaced: list[str] = []
        if model is not None and model.instances and not request.new_instance:
            for instance in model.instances:  # loaded with another config: replace it
                if request.identifier is None or instance.id == request.identifier:
                    await self._unload_instance(instance)
                    replaced.append(instance.id)
        spec = LoadSpec(request.model, converted.config, request.identifier, request.ttl)
        done = await self._run(choice.surface, spec)
        not_applied = {**converted.not_applied, **done.not_applied}
        for name in wanted.keys() - done.applied.keys() - not_applied.keys():
            not_applied[name] = needs(name)
        outcome = LoadOutcome(
            request.model,
            done.instance_id,
            done.seconds,
            dict(done.applied),
            not_applied,
            replaced=replaced,
            surface=done.surface,
            effective=done.effective,
        )
        outcome = self._with_extras(outcome, request, converted.applied_as, {})
        config = {REST_FIELDS[k]: v for k, v in (done.effective or {}).items() if k in REST_FIELDS}
        self.watcher.record(added=Instance(done.instance_id, request.model, config))
        if "parallel" not in config:  # the SDK reads no `parallel` back: the listing has it,
            with contextlib.suppress(GatewayError):  # and the scheduler's slots come from it
                await self._refresh()
        self._made[done.instance_id] = (key, outcome)
        self._publish(
            "model_loaded",
            modelKey=request.model,
            instanceId=done.instance_id,
            config=config,
            surface=done.surface,
            source="gateway",
        )
        return outcome

    @staticmethod
    def _with_extras(
        outcome: LoadOutcome,
        request: _Request,
        applied_as: dict[str, str],
        not_applied: dict[str, str],
    ) -> LoadOutcome:
        """Add what the gateway applied itself: `cpuThreads`, `gpu.layers` as a ratio."""
        outcome.not_applied.update(not_applied)
        for name, how in applied_as.items():
            if "gpu.ratio" in outcome.applied:
                outcome.applied[name] = request.config.get("gpu", {}).get("layers")
                outcome.applied_as[name] = how
            else:
                outcome.not_applied[name] = outcome.not_applied.get("gpu.ratio", how)
        if request.cpu_threads is not None:
            outcome.applied["cpuThreads"] = request.cpu_threads
            outcome.applied_as["cpuThreads"] = CPU_THREADS_AS
        return outcome

    async def _run(self, surface: LoadSurface, spec: LoadSpec) -> SurfaceLoad:
        self.stats.current_operation = f"loading {spec.model}"
        started = time.monotonic()
        last = {"progress": None, "at": 0.0}

        def progress(fraction: float) -> None:
            now = time.monotonic()
            if fraction == last["progress"] or (
                now - float(last["at"] or 0) < 0.25 and fraction < 1
            ):
                return
            last.update(progress=fraction, at=now)
            self._publish(
                "model_load_progress",
                modelKey=spec.model,
                surface=surface.name,
                progress=round(fraction, 3),
                elapsedSeconds=round(now - started, 1),
            )

        ticker = asyncio.create_task(self._ticker(spec.model, surface.name, started, last))
        try:
            return await surface.load(spec, progress)
        except GatewayError as exc:
            self._publish(
                "error",
                operation="model_load",
                modelKey=spec.model,
                surface=surface.name,
                message=exc.message,
            )
            raise
        except Exception as exc:  # a surface's own bug or library error: still an answer
            message = f"the {surface.name} load of {spec.model} failed ({type(exc).__name__})"
            self._publish("error", operation="model_load", modelKey=spec.model, message=message)
            raise LoadFailed(message) from exc
        finally:
            ticker.cancel()
            self.stats.current_operation = None

    async def _ticker(
        self, model_key: str, surface: str, started: float, last: dict[str, Any]
    ) -> None:
        """Surfaces that report no progress: tell the debug stream the load is still going."""
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)
            self._publish(
                "model_load_progress",
                modelKey=model_key,
                surface=surface,
                progress=last["progress"],
                elapsedSeconds=round(time.monotonic() - started, 1),
            )

    async def _refresh(self) -> None:
        await self.watcher.poll()

    async def _unloader(self) -> LoadSurface:
        """REST when the upstream has it (it unloads any instance), else another surface."""
        available = await self.chooser.available()
        rest = [s for s in available if s.name == REST]
        if not (rest or available):
            raise LoadFailed("no surface can unload models on this upstream")
        return (rest or available)[0]

    async def _unload_instance(self, instance: Instance) -> None:
        surface = await self._unloader()
        await surface.unload(instance.id)
        self._made.pop(instance.id, None)
        self.watcher.record(removed=instance.id)
        self._publish(
            "model_unloaded",
            modelKey=instance.model_key,
            instanceId=instance.id,
            surface=surface.name,
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
        self,
        *,
        model_key: str | None,
        instance_id: str | None,
        everything: bool,
        elsewhere: Callable[[str], bool] | None = None,
    ) -> tuple[list[str], bool]:
        """Unload instances upstream; clear the activation if the active model went away
        (from here, and from every other upstream: `elsewhere` tells whether it is loaded on
        one). Returns (unloaded instance ids, whether the active model was cleared)."""
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
        still_there = active is not None and (
            any(i.model_key == active or i.id == active for i in self.watcher.instances.values())
            or (elsewhere is not None and elsewhere(active))
        )
        gone = (
            active is not None
            and not still_there
            and (everything or model_key == active or any(i.model_key == active for i in targets))
        )
        if gone:
            await self.state.clear(active)
        return [i.id for i in targets], gone
