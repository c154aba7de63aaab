"""The upstream's models and their loaded instances, read from whichever surface it offers.

REST v1 gives loaded instances with their config; v0 gives a loaded/not-loaded state per model;
a plain OpenAI-compatible server only lists ids (assumed loaded: it serves them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmgate.loading.layers import layer_count
from lmgate.upstream.capabilities import Capabilities
from lmgate.upstream.client import UpstreamClient

LIST_LIMIT_S = 10.0


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    model_key: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UpstreamModel:
    key: str
    type: str | None = None
    instances: tuple[Instance, ...] = ()
    max_context_length: int | None = None
    quantization: str | None = None
    format: str | None = None
    display_name: str | None = None
    size_bytes: int | None = None  # on disk (REST v1), for the scheduler's memory budget
    layers: int | None = None  # layer count, where the upstream lists one (`gpu.layers`)

    @property
    def loaded(self) -> bool:
        return bool(self.instances)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "type": self.type,
            "displayName": self.display_name,
            "loaded": self.loaded,
            "instances": [{"id": i.id, "config": i.config} for i in self.instances],
            "maxContextLength": self.max_context_length,
            "quantization": self.quantization,
            "format": self.format,
        }


def _from_v1(entry: dict[str, Any]) -> UpstreamModel:
    key = str(entry.get("key"))
    quant = entry.get("quantization")
    return UpstreamModel(
        key=key,
        type=entry.get("type"),
        instances=tuple(
            Instance(str(i.get("id")), key, dict(i.get("config") or {}))
            for i in entry.get("loaded_instances") or []
            if isinstance(i, dict)
        ),
        max_context_length=entry.get("max_context_length"),
        quantization=quant.get("name") if isinstance(quant, dict) else quant,
        format=entry.get("format"),
        display_name=entry.get("display_name"),
        size_bytes=size if isinstance(size := entry.get("size_bytes"), int) else None,
        layers=layer_count(entry),
    )


def _from_v0(entry: dict[str, Any]) -> UpstreamModel:
    key = str(entry.get("id"))
    loaded = entry.get("state") == "loaded"
    config = (
        {"context_length": entry["loaded_context_length"]}
        if loaded and "loaded_context_length" in entry
        else {}
    )
    kind = entry.get("type")
    return UpstreamModel(
        key=key,
        type="embedding" if kind == "embeddings" else kind,
        instances=(Instance(key, key, config),) if loaded else (),
        max_context_length=entry.get("max_context_length"),
        quantization=entry.get("quantization"),
        format=entry.get("compatibility_type"),
        layers=layer_count(entry),
    )


def _from_openai(entry: dict[str, Any]) -> UpstreamModel:
    key = str(entry.get("id"))
    return UpstreamModel(key=key, instances=(Instance(key, key),))


async def fetch(client: UpstreamClient, caps: Capabilities) -> list[UpstreamModel]:
    """Every model the upstream knows, from the richest surface it offers."""
    if caps.native_v1:
        body = await client.call("GET", "/api/v1/models", limit_s=LIST_LIMIT_S)
        return [_from_v1(e) for e in body.get("models", []) if isinstance(e, dict)]
    if caps.native_v0:
        body = await client.call("GET", "/api/v0/models", limit_s=LIST_LIMIT_S)
        return [_from_v0(e) for e in body.get("data", []) if isinstance(e, dict)]
    if caps.ollama:
        return await _ollama(client)
    body = await client.call("GET", "/v1/models", limit_s=LIST_LIMIT_S)
    return [_from_openai(e) for e in body.get("data", []) if isinstance(e, dict)]


async def _ollama(client: UpstreamClient) -> list[UpstreamModel]:
    """Ollama's native list: every pulled model with its size (`/api/tags`), and those in
    memory now (`/api/ps`) as its loaded instances."""
    tags = await client.call("GET", "/api/tags", limit_s=LIST_LIMIT_S)
    running = await client.call("GET", "/api/ps", limit_s=LIST_LIMIT_S)
    loaded = {
        str(e.get("name") or e.get("model"))
        for e in (running or {}).get("models") or []
        if isinstance(e, dict)
    }
    models = []
    for entry in (tags or {}).get("models") or []:
        if not isinstance(entry, dict) or not (entry.get("name") or entry.get("model")):
            continue
        key = str(entry.get("name") or entry.get("model"))
        size = entry.get("size")
        models.append(
            UpstreamModel(
                key=key,
                instances=(Instance(key, key),) if key in loaded else (),
                size_bytes=size if isinstance(size, int) else None,
                format=str((entry.get("details") or {}).get("format") or "") or None,
            )
        )
    return models


def loaded_instances(models: list[UpstreamModel]) -> dict[str, Instance]:
    return {i.id: i for m in models for i in m.instances}
