"""The honest fallback: an upstream that cannot load models (LM Studio 0.3, llama.cpp...)
gets its intent stored and the steps the operator has to do by hand."""

from __future__ import annotations

import shlex
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


def lms_load_command(key: str, config: dict[str, Any], identifier: str | None = None) -> str:
    """`lms load` with the flags it has for what was asked (context, GPU, TTL, name)."""
    parts = ["lms", "load", shlex.quote(key)]
    gpu = config.get("gpu") if isinstance(config.get("gpu"), dict) else {}
    flags = (
        ("--context-length", config.get("contextLength")),
        ("--gpu", gpu.get("ratio") if gpu else None),
        ("--ttl", config.get("ttl")),
        ("--identifier", identifier),
    )
    parts += [f"{flag} {shlex.quote(str(value))}" for flag, value in flags if value is not None]
    return " ".join(parts)


def load_workflow(
    key: str, config: dict[str, Any], activated: bool, identifier: str | None = None
) -> dict[str, str]:
    command = lms_load_command(key, config, identifier)
    return {
        "step1": "Load the model manually in LM Studio UI",
        "step2": _describe_load_config(config),
        "step3": f"Or from a shell on the LM Studio machine: {command}",
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
