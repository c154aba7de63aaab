"""Downloaded models and loaded instances: the state LM Studio's model manager keeps.

Instance ids follow LM Studio: the first instance of a model is named after its key, further
ones get `:2`, `:3`… suffixes. JIT-loaded instances can carry an idle TTL and are evicted
lazily (on the next catalog access after it ran out) rather than by a timer.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmgate.emulator.config import ModelSpec

BUSY_UNLOADS_KEPT = 100

LLM_LOAD_DEFAULTS: dict[str, Any] = {
    "eval_batch_size": 512,
    "parallel": 4,
    "flash_attention": True,
    "offload_kv_cache_to_gpu": True,
}


@dataclass
class Instance:
    """A model loaded into memory under an instance id."""

    id: str
    spec: ModelSpec
    config: dict[str, Any]
    jit: bool = False
    ttl: float | None = None
    last_used: float = field(default_factory=time.monotonic)
    # Load settings only the SDK reaches (KV keys to values), and the SDK's opaque handle.
    extras: dict[str, Any] = field(default_factory=dict)
    reference: str = field(default_factory=lambda: secrets.token_urlsafe(18))

    @property
    def context_length(self) -> int:
        value: int = self.config["context_length"]
        return value

    def touch(self) -> None:
        self.last_used = time.monotonic()


@dataclass
class LoadResult:
    """An instance plus how long getting it took (0 when it was already loaded)."""

    instance: Instance
    load_seconds: float
    loaded_now: bool


class Generation:
    """A context manager around one answer: how many a model generates at once, and the peak,
    so tests can prove a gateway never sent more than a model's slots."""

    __slots__ = ("catalog", "model", "running")

    def __init__(self, catalog: Catalog, model: str) -> None:
        self.catalog = catalog
        self.model = model
        self.running = False

    def __enter__(self) -> Generation:
        running = self.catalog.generating
        now = running[self.model] = running.get(self.model, 0) + 1
        if now > self.catalog.peak.get(self.model, 0):
            self.catalog.peak[self.model] = now
        self.running = True
        return self

    def end(self) -> None:
        """The answer's last byte is on its way: the slot is free (before the handler's own
        cleanup, as LM Studio frees a slot when generation ends)."""
        if self.running:
            self.running = False
            self.catalog.generating[self.model] -= 1

    def __exit__(self, *exc: object) -> None:
        self.end()


class Catalog:
    """Owns the model list and loaded instances; counts loads and unloads for the hooks."""

    def __init__(self, specs: Sequence[ModelSpec], *, default_context_length: int) -> None:
        self.specs: dict[str, ModelSpec] = {spec.key: spec for spec in specs}
        self.instances: list[Instance] = []
        self.loads = 0
        self.unloads = 0
        self._default_context = default_context_length
        self._jit_loading: dict[str, asyncio.Future[Instance]] = {}
        self.generating: dict[str, int] = {}  # model key: answers being generated now
        self.peak: dict[str, int] = {}  # model key: the most generated at once
        self.busy_unloads = 0  # instances unloaded while their model was generating
        # The last of those unloads, for a test to say which model a gateway cut and when.
        self.busy_unloaded: deque[dict[str, Any]] = deque(maxlen=BUSY_UNLOADS_KEPT)

    def generation(self, name: str) -> Generation:
        """Counts one answer for the model `name` resolves to, while it is generated."""
        spec = self.find_spec(name)
        return Generation(self, spec.key if spec is not None else name)

    # -- lookups ---------------------------------------------------------------------------

    def find_spec(self, name: str) -> ModelSpec | None:
        """Resolve a model key, a `key@quant` variant or an instance id to its model."""
        if name in self.specs:
            return self.specs[name]
        for spec in self.specs.values():
            if name.lower() == spec.variant:
                return spec
        instance = self.find_instance(name)
        return instance.spec if instance else None

    def find_instance(self, name: str) -> Instance | None:
        """An instance by id, else the first instance of the named model key or variant."""
        self.expire_idle()
        for instance in self.instances:
            if instance.id == name:
                return instance
        for instance in self.instances:
            if name in (instance.spec.key, instance.spec.variant):
                return instance
        return None

    def loaded(self, spec: ModelSpec | None = None) -> list[Instance]:
        self.expire_idle()
        return [i for i in self.instances if spec is None or i.spec.key == spec.key]

    # -- loading and unloading -------------------------------------------------------------

    def load_config(self, spec: ModelSpec, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The effective load config: per-model defaults overlaid with the request's fields."""
        config: dict[str, Any] = {
            "context_length": min(self._default_context, spec.max_context_length)
            if spec.type == "llm"
            else spec.max_context_length
        }
        if spec.type == "llm":
            config.update(LLM_LOAD_DEFAULTS, parallel=spec.parallel)
        for name, value in overrides.items():
            if name == "context_length" or (spec.type == "llm" and name != "ttl"):
                config[name] = value
        return config

    def add(
        self,
        spec: ModelSpec,
        overrides: Mapping[str, Any] | None = None,
        *,
        jit: bool = False,
        ttl: float | None = None,
        count: bool = True,
        identifier: str | None = None,
        extras: Mapping[str, Any] | None = None,
    ) -> Instance:
        """Load another instance of `spec` right now (no simulated delay); `identifier`
        names it instead of the `key`, `key:2`… sequence (the caller checks it is free)."""
        taken = {i.id for i in self.instances}
        instance_id, suffix = identifier or spec.key, 1
        while identifier is None and instance_id in taken:
            suffix += 1
            instance_id = f"{spec.key}:{suffix}"
        instance = Instance(
            instance_id,
            spec,
            self.load_config(spec, overrides or {}),
            jit=jit,
            ttl=ttl,
            extras=dict(extras or {}),
        )
        self.instances.append(instance)
        if count:
            self.loads += 1
        return instance

    def remove(self, instance_id: str) -> Instance | None:
        for instance in self.instances:
            if instance.id == instance_id:
                self.instances.remove(instance)
                self.unloads += 1
                running = self.generating.get(instance.spec.key, 0)
                if running:
                    self.busy_unloads += 1
                    self.busy_unloaded.append(
                        {
                            "model": instance.spec.key,
                            "instance_id": instance.id,
                            "generating": running,
                            "at": time.time(),
                        }
                    )
                return instance
        return None

    def expire_idle(self) -> None:
        now = time.monotonic()
        for instance in list(self.instances):
            if instance.ttl is not None and now - instance.last_used > instance.ttl:
                self.remove(instance.id)

    async def load(
        self, spec: ModelSpec, overrides: Mapping[str, Any], *, delay: float
    ) -> LoadResult:
        """An explicit load: always a new instance, after the simulated load time."""
        started = time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        instance = self.add(spec, overrides, ttl=_ttl(overrides))
        return LoadResult(instance, time.monotonic() - started, loaded_now=True)

    async def jit_load(
        self,
        spec: ModelSpec,
        *,
        delay: float,
        ttl: float | None,
        overrides: Mapping[str, Any] | None = None,
        evict_others: bool = True,
    ) -> LoadResult:
        """Load on demand for an inference request; concurrent requests share one load."""
        started = time.monotonic()
        pending = self._jit_loading.get(spec.key)
        if pending is not None:
            instance = await asyncio.shield(pending)
            return LoadResult(instance, time.monotonic() - started, loaded_now=True)
        future: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self._jit_loading[spec.key] = future
        try:
            if evict_others:
                for other in [i for i in self.instances if i.jit]:
                    self.remove(other.id)
            if delay > 0:
                await asyncio.sleep(delay)
            instance = self.add(spec, overrides, jit=True, ttl=ttl)
            future.set_result(instance)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) get it re-raised
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            del self._jit_loading[spec.key]
        return LoadResult(instance, time.monotonic() - started, loaded_now=True)


def _ttl(fields: Mapping[str, Any]) -> float | None:
    value = fields.get("ttl")
    return float(value) if isinstance(value, int | float) and value > 0 else None
