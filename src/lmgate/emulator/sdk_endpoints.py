"""What the emulated SDK websocket answers: model listings, loads, unloads, load configs
and model downloads, on the same catalog the HTTP routes use (so a model loaded here is
listed by `/api/v1/models` and serves inference there).

  llm / embedding   rpc listLoaded, unloadModel, getLoadConfig, getModelInfo;
                    channels loadModel, getOrLoad
  system            rpc listDownloadedModels
  repository        rpc searchModels, getModelDownloadOptions; channel downloadModel

Loads take the emulator's load delay, reported as progress messages in between, and can
be cancelled. Every load config received is kept, raw and decoded, for
`GET /__emulator/load-configs` (`DELETE` forgets them).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from lmgate.emulator import kv_config
from lmgate.emulator.catalog import Instance
from lmgate.emulator.config import ModelSpec
from lmgate.emulator.inference import state_of
from lmgate.emulator.replies import json_response
from lmgate.emulator.sdk_ws import NAMESPACES, Call, Channel, Endpoints, SdkError, endpoint_for
from lmgate.emulator.state import EmulatorState

PROGRESS_STEPS = 4
MAX_SEARCH_RESULTS = 25


# -- descriptions -------------------------------------------------------------------------


def model_path(spec: ModelSpec) -> str:
    """Where LM Studio would keep the file: `publisher/Name-GGUF/Name-QUANT.gguf`."""
    name = spec.key.rsplit("/", 1)[-1]
    if spec.format == "mlx":
        return f"{spec.publisher}/{name}-MLX-{round(spec.bits_per_weight)}bit"
    return f"{spec.publisher}/{name}-GGUF/{name}-{spec.quantization}.gguf"


def model_info(spec: ModelSpec) -> dict[str, Any]:
    """A downloaded model as `listDownloadedModels` and `resolved` describe it."""
    info: dict[str, Any] = {
        "type": spec.type,
        "modelKey": spec.key,
        "format": spec.format,
        "displayName": spec.display_name,
        "path": model_path(spec),
        "sizeBytes": spec.size_bytes,
        "paramsString": spec.params_string,
        "architecture": spec.architecture,
        "maxContextLength": spec.max_context_length,
    }
    if spec.type == "llm":
        info["vision"] = spec.vision
        info["trainedForToolUse"] = spec.trained_for_tool_use
    return info


def instance_info(instance: Instance) -> dict[str, Any]:
    """A loaded instance as `listLoaded`, `getModelInfo` and load results describe it."""
    return {
        **model_info(instance.spec),
        "identifier": instance.id,
        "instanceReference": instance.reference,
        "contextLength": instance.context_length,
        "ttlMs": round(instance.ttl * 1000) if instance.ttl is not None else None,
    }


# -- lookups ------------------------------------------------------------------------------


def _param(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SdkError("Invalid parameter", cause="Expected an object")
    return value


def _find_spec(state: EmulatorState, name: Any, domain: str) -> ModelSpec:
    """A downloaded model by key, `key@quant` variant or path, of the namespace's kind."""
    if not isinstance(name, str) or not name:
        raise SdkError("Invalid parameter", cause="A model key is required")
    catalog = state.catalog
    spec = catalog.specs.get(name) or next(
        (s for s in catalog.specs.values() if name.lower() in (s.variant, model_path(s).lower())),
        None,
    )
    if spec is None:
        paths = [model_path(s) for s in catalog.specs.values()]
        raise SdkError(
            f'Cannot find a model with path "{name}"',
            suggestion="Check the model key, or download the model first.",
            display={
                "code": "generic.pathNotFound",
                "path": name,
                "availablePathsSample": paths[:10],
                "totalModels": len(paths),
            },
        )
    if spec.type != domain:
        raise SdkError(
            f'Model "{name}" is not a model of type {domain}',
            display={
                "code": "generic.domainMismatch",
                "path": model_path(spec),
                "actualDomain": spec.type,
                "expectedDomain": domain,
            },
        )
    return spec


def _matches(instance: Instance, query: dict[str, Any], domain: str) -> bool:
    if instance.spec.type != (query.get("domain") or domain):
        return False
    identifier, path = query.get("identifier"), query.get("path")
    if identifier is not None and identifier not in (instance.id, instance.spec.key):
        return False
    if path is not None and path not in (model_path(instance.spec), instance.spec.key):
        return False
    return query.get("vision") is None or query["vision"] == instance.spec.vision


def _find_instance(state: EmulatorState, specifier: Any, domain: str) -> Instance:
    """The loaded instance a `{type: query|instanceReference}` specifier names."""
    loaded = state.catalog.loaded()
    spec = _param(specifier)
    if spec.get("type") == "instanceReference":
        found = next((i for i in loaded if i.reference == spec.get("instanceReference")), None)
        if found is None:
            raise SdkError(
                "This model instance is no longer loaded",
                display={"code": "generic.specificModelUnloaded"},
            )
        return found
    query = _param(spec.get("query", {}))
    exact = next((i for i in loaded if i.id == query.get("identifier")), None)
    candidates = [exact] if exact is not None else loaded
    found = next((i for i in candidates if _matches(i, query, domain)), None)
    if found is None:
        ids = [i.id for i in loaded]
        raise SdkError(
            "No loaded model satisfies all requirements specified in the query.",
            display={
                "code": "generic.noModelMatchingQuery",
                "query": query,
                "loadedModelsSample": ids[:10],
                "totalLoadedModels": len(ids),
            },
        )
    return found


# -- model namespaces (llm, embedding) ----------------------------------------------------


async def list_loaded(call: Call, parameter: Any) -> list[dict[str, Any]]:
    loaded = call.state.catalog.loaded()
    return [instance_info(i) for i in loaded if i.spec.type == call.namespace]


async def unload_model(call: Call, parameter: Any) -> None:
    identifier = _param(parameter).get("identifier")
    catalog = call.state.catalog
    found = next(
        (i for i in catalog.loaded() if i.id == identifier and i.spec.type == call.namespace),
        None,
    )
    if found is None:
        ids = [i.id for i in catalog.loaded()]
        raise SdkError(
            f'No model found with identifier "{identifier}"',
            display={
                "code": "generic.identifierNotFound",
                "identifier": str(identifier),
                "loadedModelsSample": ids[:10],
                "totalLoadedModels": len(ids),
            },
        )
    catalog.remove(found.id)


async def get_load_config(call: Call, parameter: Any) -> dict[str, Any]:
    instance = _find_instance(call.state, _param(parameter).get("specifier"), call.namespace)
    return kv_config.effective(instance)


async def get_model_info(call: Call, parameter: Any) -> dict[str, Any] | None:
    param = _param(parameter)
    try:
        instance = _find_instance(call.state, param.get("specifier"), call.namespace)
    except SdkError:
        if param.get("throwIfNotFound") is False:
            return None
        raise
    return instance_info(instance)


def _record(channel: Channel, endpoint: str, param: dict[str, Any]) -> dict[str, Any]:
    """Keep what arrived, decoded if it can be; returns the decoded fields."""
    entry: dict[str, Any] = {
        "time": time.time(),
        "namespace": channel.namespace,
        "endpoint": endpoint,
        "model": param.get("modelKey", param.get("identifier")),
        "identifier": param.get("identifier") if endpoint == "loadModel" else None,
        "ttl_ms": param.get("ttlMs", param.get("loadTtlMs")),
        "stack": param.get("loadConfigStack"),
        "fields": None,
    }
    channel.state.load_configs.append(entry)
    try:
        entry["fields"] = fields = kv_config.decode_stack(param.get("loadConfigStack"))
    except kv_config.KvConfigError as exc:
        raise SdkError("Invalid load configuration", cause=str(exc)) from None
    return fields


def _ttl_seconds(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SdkError("Invalid parameter", cause="ttlMs must be a positive integer")
    return value / 1000


def _settings(spec: ModelSpec, fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        return kv_config.apply(spec, fields)
    except kv_config.KvConfigError as exc:
        raise SdkError(f'Failed to load model "{spec.key}"', cause=str(exc)) from None


async def _progress(channel: Channel, kind: str) -> None:
    """The load delay, in steps, each reported as `{type: kind, progress}`."""
    delay = channel.state.config.load_delay
    for step in range(1, PROGRESS_STEPS + 1):
        await channel.pause(delay / PROGRESS_STEPS)
        await channel.send({"type": kind, "progress": step / PROGRESS_STEPS})


def _check_free(state: EmulatorState, identifier: str | None) -> None:
    if identifier is not None and any(i.id == identifier for i in state.catalog.loaded()):
        raise SdkError(
            f'A model with identifier "{identifier}" is already loaded',
            suggestion="Choose another identifier, or unload that instance first.",
        )


async def load_model(channel: Channel, parameter: Any) -> None:
    param = _param(parameter)
    fields = _record(channel, "loadModel", param)
    state = channel.state
    spec = _find_spec(state, param.get("modelKey"), channel.namespace)
    identifier = param.get("identifier")
    if identifier is not None and (not isinstance(identifier, str) or not identifier):
        raise SdkError("Invalid parameter", cause="identifier must be a non-empty string")
    ttl = _ttl_seconds(param.get("ttlMs"))
    overrides, extras = _settings(spec, fields)
    _check_free(state, identifier)
    await channel.send({"type": "resolved", "info": model_info(spec)})
    await _progress(channel, "progress")
    _check_free(state, identifier)  # another load may have taken it meanwhile
    instance = state.catalog.add(spec, overrides, ttl=ttl, identifier=identifier, extras=extras)
    await channel.send({"type": "success", "info": instance_info(instance)})


async def get_or_load(channel: Channel, parameter: Any) -> None:
    param = _param(parameter)
    fields = _record(channel, "getOrLoad", param)
    state = channel.state
    name = param.get("identifier")
    found = next(
        (
            i
            for i in state.catalog.loaded()
            if i.spec.type == channel.namespace and name in (i.id, i.spec.key, i.spec.variant)
        ),
        None,
    )
    if found is not None:
        found.touch()
        await channel.send({"type": "alreadyLoaded", "info": instance_info(found)})
        return
    spec = _find_spec(state, name, channel.namespace)
    ttl = _ttl_seconds(param.get("loadTtlMs"))
    overrides, extras = _settings(spec, fields)
    if state.config.auto_evict:
        for other in [i for i in state.catalog.loaded() if i.jit]:
            await channel.send({"type": "unloadingOtherJITModel", "info": instance_info(other)})
            state.catalog.remove(other.id)
    await channel.send({"type": "startLoading", "identifier": spec.key, "info": model_info(spec)})
    await _progress(channel, "loadProgress")
    instance = state.catalog.find_instance(spec.key) or state.catalog.add(
        spec, overrides, jit=True, ttl=ttl, extras=extras
    )
    await channel.send({"type": "loadSuccess", "info": instance_info(instance)})


# -- system -------------------------------------------------------------------------------


async def list_downloaded(call: Call, parameter: Any) -> list[dict[str, Any]]:
    return [model_info(spec) for spec in call.state.catalog.specs.values()]


# -- repository: the catalog doubles as the hub models are downloaded from ------------------


async def search_models(call: Call, parameter: Any) -> dict[str, Any]:
    opts = _param(_param(parameter).get("opts", {}))
    term = str(opts.get("searchTerm") or "").lower()
    limit = opts.get("limit")
    limit = limit if isinstance(limit, int) and 0 < limit <= MAX_SEARCH_RESULTS else 10
    kinds = opts.get("compatibilityTypes")
    results = [
        {
            "name": spec.key,
            "identifier": {"type": "catalog", "identifier": spec.key},
            "exact": term == spec.key.lower(),
            "staffPick": False,
        }
        for spec in call.state.catalog.specs.values()
        if (term in spec.key.lower() or term in spec.display_name.lower())
        and (not isinstance(kinds, list) or spec.format in kinds)
    ]
    return {"results": results[:limit]}


async def download_options(call: Call, parameter: Any) -> dict[str, Any]:
    wanted = _param(_param(parameter).get("modelSearchResultIdentifier"))
    spec = call.state.catalog.specs.get(str(wanted.get("identifier")))
    if spec is None:
        raise SdkError(f'Model "{wanted.get("identifier")}" not found in the catalog')
    option = {
        "name": f"{spec.display_name} {spec.quantization}",
        "sizeBytes": spec.size_bytes,
        "fitEstimation": "fullGPUOffload",
        "downloadIdentifier": model_path(spec),
        "indexedModelIdentifier": spec.key,
        "quantization": spec.quantization,
        "recommended": True,
    }
    return {"results": [option]}


async def download_model(channel: Channel, parameter: Any) -> None:
    wanted = _param(parameter).get("downloadIdentifier")
    state = channel.state
    spec = next((s for s in state.catalog.specs.values() if model_path(s) == wanted), None)
    if spec is None:
        raise SdkError(f'Unknown download "{wanted}"')
    delay = state.config.load_delay
    speed = spec.size_bytes / delay if delay > 0 else float(spec.size_bytes)
    for step in range(1, PROGRESS_STEPS + 1):
        await channel.pause(delay / PROGRESS_STEPS)
        update = {
            "downloadedBytes": spec.size_bytes * step // PROGRESS_STEPS,
            "totalBytes": spec.size_bytes,
            "speedBytesPerSecond": speed,
        }
        await channel.send({"type": "downloadProgress", "update": update})
    await channel.send({"type": "startFinalizing"})
    await channel.send({"type": "success", "defaultIdentifier": spec.key})


ENDPOINTS = Endpoints(
    rpc={
        **{
            domain: {
                "listLoaded": list_loaded,
                "unloadModel": unload_model,
                "getLoadConfig": get_load_config,
                "getModelInfo": get_model_info,
            }
            for domain in ("llm", "embedding")
        },
        "system": {"listDownloadedModels": list_downloaded},
        "repository": {"searchModels": search_models, "getModelDownloadOptions": download_options},
    },
    channels={
        **{
            domain: {"loadModel": load_model, "getOrLoad": get_or_load}
            for domain in ("llm", "embedding")
        },
        "repository": {"downloadModel": download_model},
    },
)


async def list_load_configs(request: Request) -> Response:
    return json_response(list(state_of(request).load_configs))


async def clear_load_configs(request: Request) -> Response:
    state = state_of(request)
    cleared = len(state.load_configs)
    state.load_configs.clear()
    return json_response({"cleared": cleared})


def routes() -> list[BaseRoute]:
    sockets: list[BaseRoute] = [
        WebSocketRoute(f"/{namespace}", endpoint_for(namespace, ENDPOINTS))
        for namespace in NAMESPACES
    ]
    return [
        *sockets,
        Route("/__emulator/load-configs", list_load_configs, methods=["GET"]),
        Route("/__emulator/load-configs", clear_load_configs, methods=["DELETE"]),
    ]
