"""Admin model state: activate, load, unload, and the state itself (admin scope only).

This upstream surface cannot load models by itself yet, so load and unload store the intent
and answer with the steps the operator has to do by hand (the seed's honest workflow).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from lmgate.admin.schemas import ActivateRequest, LoadRequest, UnloadRequest
from lmgate.gateway import gateway_of

router = APIRouter(prefix="/admin", tags=["admin"])


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


@router.post("/models/activate")
async def activate(body: ActivateRequest, request: Request) -> dict[str, Any]:
    gw = gateway_of(request)
    given = body.default_inference.wire() if body.default_inference else None
    defaults = (await gw.state.activate(body.model_key, given)).default_inference
    gw.bus.publish("model_activate", modelKey=body.model_key, defaultInference=defaults)
    return {
        "status": "activated",
        "message": f"'{body.model_key}' is now the active model.",
        "modelKey": body.model_key,
        "defaultInference": defaults,
    }


@router.post("/models/load")
async def load(body: LoadRequest, request: Request) -> dict[str, Any]:
    gw = gateway_of(request)
    key = body.model_key
    config = body.load_config.wire() if body.load_config else {}
    given = body.default_inference.wire() if body.default_inference else None
    defaults = given or {}
    gw.bus.publish("model_load_start", modelKey=key, loadConfig=config)
    gw.stats.current_operation = f"load {key}"
    try:
        if body.activate:
            defaults = (await gw.state.activate(key, given, config)).default_inference
        else:
            await gw.state.store_load_config(key, config)
    finally:
        gw.stats.current_operation = None
    gw.bus.publish("model_load_complete", modelKey=key, activated=body.activate, loaded=False)
    if body.activate:
        gw.bus.publish("model_activate", modelKey=key, defaultInference=defaults)
    return {
        "status": "activated" if body.activate else "stored",
        "message": (
            f"'{key}' is {'now the active model' if body.activate else 'stored'} in lmgate. "
            "This upstream cannot be told to load models, so load it in LM Studio by hand."
        ),
        "modelKey": key,
        "loadConfig": config,
        "defaultInference": defaults,
        "workflow": {
            "step1": "Load the model manually in LM Studio UI",
            "step2": _describe_load_config(config),
            "step3": f"Or from a shell on the LM Studio machine: lms load {key}",
            "step4": (
                "Requests without a model, or lacking parameters, now get "
                f"'{key}' and the stored defaults injected by lmgate."
                if body.activate
                else "Activate it with POST /admin/models/activate when it should be the default."
            ),
        },
    }


@router.post("/models/unload")
async def unload(body: UnloadRequest, request: Request) -> dict[str, Any]:
    gw = gateway_of(request)
    key = body.model_key
    gw.bus.publish("model_unload_start", modelKey=key)
    was_active = await gw.state.clear(key)
    gw.bus.publish("model_unload_complete", modelKey=key, wasActive=was_active)
    return {
        "status": "cleared",
        "message": (
            f"'{key}' is no longer the active model."
            if was_active
            else f"'{key}' was not the active model; nothing changed in lmgate."
        ),
        "modelKey": key,
        "wasActive": was_active,
        "workflow": {
            "step1": "Unload the model manually in LM Studio UI",
            "step2": f"Or from a shell on the LM Studio machine: lms unload {key}",
            "step3": "Requests without a model now pass to LM Studio unchanged.",
        },
    }


@router.get("/state")
async def state(request: Request) -> dict[str, Any]:
    return gateway_of(request).state.state.as_json()
