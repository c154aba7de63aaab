"""The honest fallback: an upstream that cannot load models (LM Studio 0.3, llama.cpp...)
gets its intent stored and the steps the operator has to do by hand."""

from __future__ import annotations

from typing import Any


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _describe_load_config(config: dict[str, Any]) -> str:
    if not config:
        return "Use LM Studio's default load settings."
    parts = [f"{name} = {value}" for name, value in sorted(_flatten(config).items())]
    return "Apply these load settings in LM Studio: " + ", ".join(parts) + "."


def load_workflow(key: str, config: dict[str, Any], activated: bool) -> dict[str, str]:
    return {
        "step1": "Load the model manually in LM Studio UI",
        "step2": _describe_load_config(config),
        "step3": f"Or from a shell on the LM Studio machine: lms load {key}",
        "step4": (
            f"Requests without a model, or lacking parameters, now get '{key}' and the stored "
            "defaults injected by lmgate."
            if activated
            else "Activate it with POST /admin/models/activate when it should be the default."
        ),
    }


def unload_workflow(key: str | None) -> dict[str, str]:
    target = key or "the model(s)"
    return {
        "step1": "Unload the model manually in LM Studio UI",
        "step2": f"Or from a shell on the LM Studio machine: lms unload {key or '--all'}",
        "step3": "Requests without a model now pass to LM Studio unchanged."
        if key is None
        else f"lmgate no longer injects {target} into requests that name no model.",
    }
