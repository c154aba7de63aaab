"""LM Studio's KV load config, as the SDK sends it and `getLoadConfig` returns it.

The SDK turns a load config into a stack of layers of `{key, value}` fields (reference §9.1);
some values are checkbox-wrapped `{"checked", "value"}`. An instance keeps the fields REST
also knows in its `config` (snake_case, shown by `/api/v1/models`) and every other field in
`extras`, so both surfaces describe the same instance. Values are checked the way LM Studio's
schema would refuse them; keys it does not know are dropped (a newer SDK may send more).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lmgate.emulator.catalog import Instance
from lmgate.emulator.config import ModelSpec, ModelType

QUANT_TYPES = frozenset({"f32", "f16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"})

# KV key suffixes (after `llm.load.` / `embedding.load.`) that REST reports in `config`.
_REST_NAMES = {
    "contextLength": "context_length",
    "llama.evalBatchSize": "eval_batch_size",
    "llama.flashAttention": "flash_attention",
    "numExperts": "num_experts",
    "offloadKVCacheToGpu": "offload_kv_cache_to_gpu",
}
_BOOL = (
    "llama.flashAttention",
    "llama.keepModelInMemory",
    "llama.tryMmap",
    "llama.useFp16ForKVCache",
    "offloadKVCacheToGpu",
)
_POSITIVE_INT = ("llama.evalBatchSize", "numExperts")
_LLM_ONLY = frozenset(
    {
        "numExperts",
        "seed",
        "offloadKVCacheToGpu",
        "llama.evalBatchSize",
        "llama.flashAttention",
        "llama.kCacheQuantizationType",
        "llama.vCacheQuantizationType",
        "llama.useFp16ForKVCache",
    }
)
_COMMON = frozenset(
    {
        "contextLength",
        "llama.acceleration.offloadRatio",
        "llama.keepModelInMemory",
        "llama.tryMmap",
        "llama.ropeFrequencyBase",
        "llama.ropeFrequencyScale",
    }
)
_SHARED_KEYS = frozenset({"load.gpuSplitConfig", "load.gpuStrictVramCap"})
_SPLIT_STRATEGIES = frozenset({"evenly", "priorityOrder", "custom"})


class KvConfigError(ValueError):
    """A load config LM Studio would refuse; the message is what the client is told."""


def _known(domain: ModelType) -> frozenset[str]:
    names = _COMMON | _LLM_ONLY if domain == "llm" else _COMMON
    keys = {f"{domain}.load.{name}" for name in names}
    if domain == "llm":
        return frozenset(keys | _SHARED_KEYS)
    return frozenset(keys | {"load.gpuSplitConfig"})


def decode_stack(stack: Any) -> dict[str, Any]:
    """The stack's fields, later layers overriding earlier ones; raises on a broken shape."""
    if stack is None:
        return {}
    layers = stack.get("layers") if isinstance(stack, dict) else None
    if not isinstance(layers, list):
        raise KvConfigError("loadConfigStack must be an object with a 'layers' array")
    fields: dict[str, Any] = {}
    for layer in layers:
        config = layer.get("config") if isinstance(layer, dict) else None
        entries = config.get("fields") if isinstance(config, dict) else None
        if not isinstance(entries, list):
            raise KvConfigError("each config layer needs a 'config.fields' array")
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                raise KvConfigError("each config field needs a string 'key'")
            fields[entry["key"]] = entry.get("value")
    return fields


def _checkbox(value: Any, key: str) -> tuple[bool, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("checked"), bool):
        raise KvConfigError(f"{key} must be {{checked, value}}")
    return value["checked"], value.get("value")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check(spec: ModelSpec, key: str, value: Any) -> Any:
    """The value as the instance keeps it, or `KvConfigError`."""
    name = key.split(".load.", 1)[1] if ".load." in key else key
    if name == "contextLength":
        if not isinstance(value, int) or isinstance(value, bool):
            raise KvConfigError(f"{key} must be an integer")
        if not 1 <= value <= spec.max_context_length:
            raise KvConfigError(
                f"Context length {value} is outside 1..{spec.max_context_length} for {spec.key}"
            )
    elif name == "llama.acceleration.offloadRatio":
        if value in ("max", "off"):
            return 1.0 if value == "max" else 0.0
        if not _number(value) or not 0 <= value <= 1:
            raise KvConfigError(f"{key} must be a number from 0 to 1, 'max' or 'off'")
    elif name in _BOOL or key == "load.gpuStrictVramCap":
        if not isinstance(value, bool):
            raise KvConfigError(f"{key} must be a boolean")
    elif name in _POSITIVE_INT:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise KvConfigError(f"{key} must be a positive integer")
    elif name in ("llama.ropeFrequencyBase", "llama.ropeFrequencyScale"):
        checked, inner = _checkbox(value, key)
        if checked and (not _number(inner) or inner < 0):
            raise KvConfigError(f"{key} must be a non-negative number")
    elif name in ("llama.kCacheQuantizationType", "llama.vCacheQuantizationType"):
        checked, inner = _checkbox(value, key)
        if checked and inner is not False and inner not in QUANT_TYPES:
            raise KvConfigError(f"{key} must be one of {', '.join(sorted(QUANT_TYPES))}")
    elif name == "seed":
        checked, inner = _checkbox(value, key)
        if checked and (not isinstance(inner, int) or isinstance(inner, bool)):
            raise KvConfigError(f"{key} must be an integer")
    elif key == "load.gpuSplitConfig":
        if not isinstance(value, dict) or value.get("strategy") not in _SPLIT_STRATEGIES:
            raise KvConfigError(f"{key}.strategy must be evenly, priorityOrder or custom")
    return value


def apply(spec: ModelSpec, fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split checked fields into REST-visible overrides and SDK-only extras."""
    known = _known(spec.type)
    prefix = f"{spec.type}.load."
    overrides: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for key, value in fields.items():
        if key not in known:
            continue
        kept = _check(spec, key, value)
        rest = _REST_NAMES.get(key.removeprefix(prefix)) if key.startswith(prefix) else None
        if rest is not None:
            overrides[rest] = kept
        else:
            extras[key] = kept
    return overrides, extras


def _defaults(spec: ModelSpec) -> dict[str, Any]:
    p = f"{spec.type}.load."
    fields: dict[str, Any] = {
        "load.gpuSplitConfig": {
            "strategy": "evenly",
            "disabledGpus": [],
            "priority": [],
            "customRatio": [],
        },
        p + "llama.acceleration.offloadRatio": 1.0,
        p + "llama.keepModelInMemory": True,
        p + "llama.tryMmap": True,
        p + "llama.ropeFrequencyBase": {"checked": False, "value": 0},
        p + "llama.ropeFrequencyScale": {"checked": False, "value": 0},
    }
    if spec.type == "llm":
        fields.update(
            {
                "load.gpuStrictVramCap": False,
                p + "seed": {"checked": False, "value": -1},
                p + "llama.useFp16ForKVCache": True,
                p + "llama.kCacheQuantizationType": {"checked": False, "value": "f16"},
                p + "llama.vCacheQuantizationType": {"checked": False, "value": "f16"},
            }
        )
    return fields


def effective(instance: Instance) -> dict[str, Any]:
    """The instance's whole load config as `getLoadConfig` returns it: a KV config."""
    spec = instance.spec
    fields = _defaults(spec)
    prefix = f"{spec.type}.load."
    for suffix, rest in _REST_NAMES.items():
        if rest in instance.config and (spec.type == "llm" or suffix == "contextLength"):
            fields[prefix + suffix] = instance.config[rest]
    fields.update(instance.extras)
    return {"fields": [{"key": key, "value": value} for key, value in sorted(fields.items())]}
