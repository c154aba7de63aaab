"""The gateway's `loadConfig` names (camelCase, dotted for nested ones) against LM Studio's
REST v1 names (snake_case), both ways. What was applied is decided by the load surfaces
(`lmgate.loading`), from what the upstream reports, not from this table."""

from __future__ import annotations

from typing import Any

REST_FIELDS = {
    "contextLength": "context_length",
    "flashAttention": "flash_attention",
    "evalBatchSize": "eval_batch_size",
    "numExperts": "num_experts",
    "offloadKvCacheToGpu": "offload_kv_cache_to_gpu",
    "parallel": "parallel",
}
_FROM_REST = {wire: name for name, wire in REST_FIELDS.items()}


def from_rest(config: dict[str, Any]) -> dict[str, Any]:
    """An instance's config as LM Studio reports it, in the gateway's names."""
    return {_FROM_REST.get(k, k): v for k, v in config.items()}


def matches(requested: dict[str, Any], instance_config: dict[str, Any]) -> bool:
    """Whether an instance (its config as LM Studio lists it, REST names) runs with every
    listed field that was asked for (gateway names, flat)."""
    listed = from_rest(instance_config)
    return all(listed.get(k) == v for k, v in requested.items())
