"""How each surface lists models: OpenAI's minimal entries, v0 rows with `state`, and v1
objects with `loaded_instances`. Pure functions of the catalog, no I/O."""

from __future__ import annotations

from typing import Any

from lmgate.emulator.catalog import Catalog, Instance
from lmgate.emulator.config import ModelSpec


def openai_models(catalog: Catalog, *, jit: bool) -> dict[str, Any]:
    """`/v1/models`: every downloaded model under JIT, else only loaded instances."""
    ids = list(catalog.specs) if jit else [i.id for i in catalog.loaded()]
    return {
        "object": "list",
        "data": [{"id": id_, "object": "model", "owned_by": "organization_owner"} for id_ in ids],
    }


def v0_model(catalog: Catalog, spec: ModelSpec) -> dict[str, Any]:
    """One `/api/v0/models` row per model key; `loaded_context_length` from its first instance."""
    instances = catalog.loaded(spec)
    row: dict[str, Any] = {
        "id": spec.key,
        "object": "model",
        "type": "embeddings" if spec.type == "embedding" else ("vlm" if spec.vision else "llm"),
        "publisher": spec.publisher,
        "arch": spec.architecture,
        "compatibility_type": spec.format,
        "quantization": spec.quantization,
        "state": "loaded" if instances else "not-loaded",
        "max_context_length": spec.max_context_length,
    }
    if instances:
        row["loaded_context_length"] = instances[0].context_length
    if spec.type == "llm":
        row["capabilities"] = ["tool_use"] if spec.trained_for_tool_use else []
    return row


def v0_models(catalog: Catalog) -> dict[str, Any]:
    return {"object": "list", "data": [v0_model(catalog, s) for s in catalog.specs.values()]}


def _instance_entry(instance: Instance) -> dict[str, Any]:
    return {"id": instance.id, "config": dict(instance.config)}


def v1_model(catalog: Catalog, spec: ModelSpec) -> dict[str, Any]:
    """One `/api/v1/models` object; LLM-only fields are left out for embedding models."""
    entry: dict[str, Any] = {
        "type": spec.type,
        "publisher": spec.publisher,
        "key": spec.key,
        "display_name": spec.display_name,
    }
    if spec.type == "llm":
        entry["architecture"] = spec.architecture
    entry.update(
        {
            "quantization": {"name": spec.quantization, "bits_per_weight": spec.bits_per_weight},
            "size_bytes": spec.size_bytes,
            "params_string": spec.params_string,
            "loaded_instances": [_instance_entry(i) for i in catalog.loaded(spec)],
            "max_context_length": spec.max_context_length,
            "format": spec.format,
        }
    )
    if spec.type == "llm":
        entry["capabilities"] = {
            "vision": spec.vision,
            "trained_for_tool_use": spec.trained_for_tool_use,
        }
    entry["description"] = None
    return entry


def v1_models(catalog: Catalog) -> dict[str, Any]:
    return {"models": [v1_model(catalog, s) for s in catalog.specs.values()]}
