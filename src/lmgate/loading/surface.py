"""The contract every load surface keeps, so the model manager can pick one per upstream and
per request and report honestly what each applied.

Field names are the gateway's camelCase `loadConfig` names (reference §9.2): `contextLength`,
`gpu` (`ratio`, `layers`, `mainGpu`, `splitStrategy`, `disabledGpus`), `ropeFrequencyBase`,
`ropeFrequencyScale`, `flashAttention`, `evalBatchSize`, `numExperts`, `offloadKvCacheToGpu`,
`kvCacheQuantK`, `kvCacheQuantV`, `keepModelInMemory`, `tryMmap`, `useFp16ForKVCache`, `seed`,
`parallel`. `ttl` and `identifier` travel beside the config, not in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to load: a model key, the gateway-named config, and the instance's own settings."""

    model: str
    config: dict[str, Any] = field(default_factory=dict)
    identifier: str | None = None
    ttl: int | None = None  # seconds of idleness before LM Studio itself unloads it


@dataclass(slots=True)
class SurfaceLoad:
    """What a surface did: the instance it made and, field by field (gateway names, dotted for
    nested ones such as `gpu.ratio`), what the upstream reports it applied and why the rest
    was not. `effective` is the upstream's own account of the instance's config, if it gave one."""

    surface: str
    instance_id: str
    seconds: float
    applied: dict[str, Any]
    not_applied: dict[str, str]
    effective: dict[str, Any] | None = None


Progress = Callable[[float], None]  # 0.0 .. 1.0


class LoadSurface(Protocol):
    """One way to load and unload models on one upstream."""

    name: str  # "sdk" | "lms" | "rest"

    def fields(self) -> frozenset[str]:
        """The config fields (dotted gateway names) this surface can apply at all."""
        ...

    async def available(self) -> bool:
        """Whether this surface works against the upstream right now (cheap; may be cached)."""
        ...

    async def load(self, spec: LoadSpec, progress: Progress) -> SurfaceLoad:
        """Load one instance; raise `lmgate.errors.GatewayError` subclasses on failure."""
        ...

    async def unload(self, instance_id: str) -> None: ...
