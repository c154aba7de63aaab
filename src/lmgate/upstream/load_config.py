"""The gateway's `loadConfig` (camelCase) against LM Studio's REST v1 load request.

Only documented REST fields go upstream (LM Studio rejects unknown keys). Everything else is
reported back under `notApplied` with the reason, never silently dropped.
"""

from __future__ import annotations

from typing import Any

REST_FIELDS = {
    "contextLength": "context_length",
    "flashAttention": "flash_attention",
    "evalBatchSize": "eval_batch_size",
    "numExperts": "num_experts",
    "offloadKvCacheToGpu": "offload_kv_cache_to_gpu",
}
_FROM_REST = {wire: name for name, wire in REST_FIELDS.items()}

_ROPE = (
    "RoPE settings cannot be set over LM Studio's REST API; set them in the model's "
    "load settings in LM Studio"
)
NOT_OVER_REST = {
    "gpu.ratio": "GPU offload cannot be set over LM Studio's REST API; set it in LM Studio's "
    "model load settings or with `lms load --gpu`",
    "gpu.layers": "LM Studio's REST API has no GPU layer count; LM Studio sets offload as a "
    "ratio (model load settings or `lms load --gpu`)",
    "cpuThreads": "CPU threads are a per-prediction setting in LM Studio, not part of a load",
    "ropeFrequencyBase": _ROPE,
    "ropeFrequencyScale": _ROPE,
    "ttl": "an idle TTL is not a documented field of LM Studio's REST load; set it in LM "
    "Studio or send `ttl` with inference requests for JIT loads",
}


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, dict):
            out.update({f"{name}.{sub}": v for sub, v in value.items() if v is not None})
        elif value is not None:
            out[name] = value
    return out


def to_rest(load_config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(REST fields to send, {field: why it was not applied})."""
    payload: dict[str, Any] = {}
    not_applied: dict[str, str] = {}
    for name, value in _flat(load_config).items():
        wire = REST_FIELDS.get(name)
        if wire is not None:
            payload[wire] = value
        else:
            not_applied[name] = NOT_OVER_REST.get(name, "not a field LM Studio's REST load takes")
    return payload, not_applied


def from_rest(config: dict[str, Any]) -> dict[str, Any]:
    """An instance's config as LM Studio reports it, in the gateway's names."""
    return {_FROM_REST.get(k, k): v for k, v in config.items()}


def matches(requested: dict[str, Any], instance_config: dict[str, Any]) -> bool:
    """Whether an instance already runs with every REST field that was asked for."""
    return all(instance_config.get(k) == v for k, v in requested.items())
