"""What the upstream offers and has loaded, merged with the gateway's own per-model profiles."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from lmgate import params
from lmgate.admin.edition import edition_listing
from lmgate.admin.schemas import ProfileRequest
from lmgate.errors import GatewayError, NotFound
from lmgate.gateway import gateway_of
from lmgate.loading.choose import load_surfaces

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/upstream")
async def upstream(request: Request, refresh: bool = False) -> dict[str, Any]:
    gw = gateway_of(request)
    caps = await gw.watcher.capabilities(refresh=refresh)
    return {
        "url": gw.settings.upstream_shown,
        **caps.as_json(),
        "lastSync": gw.watcher.synced_at,
        "syncError": gw.watcher.last_error,
        "loadedInstances": sorted(gw.watcher.instances),
        "loadSurfaces": await load_surfaces(gw.models.chooser),
    }


@router.get("/models")
async def models(request: Request) -> dict[str, Any]:
    """Every model the upstream knows, with loaded instances, plus the gateway's view of it."""
    gw = gateway_of(request)
    error = None
    try:
        await gw.watcher.poll()
    except GatewayError as exc:
        error = exc.message  # answer from the last good view, and say why it may be stale
    state = gw.state.state
    listed = []
    for key, model in sorted(gw.watcher.models.items()):
        entry = model.as_json()
        entry["active"] = key == state.active_model
        entry["profile"] = gw.state.profile(key).as_json() if key in state.profiles else None
        listed.append(entry)
    for key in sorted(state.profiles.keys() - gw.watcher.models.keys()):
        listed.append(
            {
                "key": key,
                "available": False,
                "loaded": False,
                "active": key == state.active_model,
                "profile": gw.state.profile(key).as_json(),
            }
        )
    return {
        "models": listed,
        "activeModel": state.active_model,
        "defaultInference": state.default_inference,
        "upstream": (await gw.watcher.capabilities()).kind,
        "error": error,
        **edition_listing(listed),  # the TypeScript edition's shape, for its clients
    }


@router.get("/models/{model_key:path}/profile")
async def get_profile(model_key: str, request: Request) -> dict[str, Any]:
    gw = gateway_of(request)
    params.text(model_key, "model_key")
    if model_key not in gw.state.state.profiles:
        raise NotFound(f"no profile for '{model_key}'", code="profile_not_found")
    return {"modelKey": model_key, **gw.state.profile(model_key).as_json()}


@router.put("/models/{model_key:path}/profile")
async def put_profile(model_key: str, body: ProfileRequest, request: Request) -> dict[str, Any]:
    """Store a model's load config and defaults, used when it is loaded on demand and for
    requests naming it (its defaults take precedence over the active ones), and its scheduling
    policy (`slots`, `ttl`, `pinned`), which applies at once."""
    return await _store_profile(model_key, body, request, merge=False)


@router.patch("/models/{model_key:path}/profile")
async def patch_profile(model_key: str, body: ProfileRequest, request: Request) -> dict[str, Any]:
    """Change only the parts of a model's profile that are sent."""
    return await _store_profile(model_key, body, request, merge=True)


async def _store_profile(
    model_key: str, body: ProfileRequest, request: Request, *, merge: bool
) -> dict[str, Any]:
    gw = gateway_of(request)
    params.text(model_key, "model_key")
    load_config = body.load_config.wire() if body.load_config else None
    defaults = body.default_inference.wire() if body.default_inference else None
    await gw.state.set_profile(model_key, load_config, defaults, merge=merge, policy=body.policy())
    gw.bus.publish("config_changed", what="profile", modelKey=model_key)
    return {"status": "stored", "modelKey": model_key, **gw.state.profile(model_key).as_json()}


@router.delete("/models/{model_key:path}/profile")
async def delete_profile(model_key: str, request: Request) -> dict[str, Any]:
    gw = gateway_of(request)
    params.text(model_key, "model_key")
    if not await gw.state.delete_profile(model_key):
        raise NotFound(f"no profile for '{model_key}'", code="profile_not_found")
    gw.bus.publish("config_changed", what="profile_deleted", modelKey=model_key)
    return {"status": "deleted", "modelKey": model_key}
