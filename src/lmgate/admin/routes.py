"""Admin model state: activate, load, unload, and the state itself (admin scope only).

Load and unload act on the upstream for real when a load surface works there (LM Studio's SDK,
its `lms` CLI, or its REST v1 API; see `lmgate.loading`); otherwise they store the intent and
answer with the steps to do by hand (see `workflow.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request

from lmgate.admin import edition
from lmgate.admin.model_check import check_known_on
from lmgate.admin.models import LoadOutcome
from lmgate.admin.schemas import ActivateRequest, LoadRequest, UnloadRequest
from lmgate.admin.workflow import load_workflow, unload_workflow
from lmgate.gateway import Gateway, gateway_of
from lmgate.upstreams.management import Placing, loaded_anywhere, manager_for, unload_targets
from lmgate.upstreams.members import Member

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/models/activate")
async def activate(body: ActivateRequest, request: Request) -> dict[str, Any]:
    gw = gateway_of(request)
    embedding = (
        body.default_embedding_model if "default_embedding_model" in body.model_fields_set else ...
    )
    warning = None
    if not body.force:
        for name in (body.model_key, embedding):
            if isinstance(name, str) and (problem := await check_known_on(gw.upstreams, name)):
                warning = problem
    given = body.default_inference.wire() if body.default_inference else None
    state = await gw.state.activate(body.model_key, given, embedding_model=embedding)
    defaults = state.default_inference
    gw.bus.publish(
        "model_activate",
        modelKey=body.model_key,
        defaultInference=defaults,
        defaultEmbeddingModel=state.embedding_model,
    )
    answer: dict[str, Any] = {
        "status": "activated",
        "message": f"'{body.model_key}' is now the active model.",
        "modelKey": body.model_key,
        "defaultInference": defaults,
        "defaultEmbeddingModel": state.embedding_model,
    }
    if warning:
        answer["warning"] = warning
    if not_applied := edition.activate_not_applied(body):
        answer["notApplied"] = not_applied
    return answer


def _at(gw: Gateway, *names: str) -> dict[str, Any]:
    """`"upstream": NAME` (and `"upstreams"` for several) once there are several upstreams."""
    if not gw.upstreams.routed:
        return {}
    if len(names) == 1:
        return {"upstream": names[0]}
    return {"upstreams": list(names)}


def _activates(gw: Gateway, body: LoadRequest) -> bool:
    """Whether a load makes its model the active one: as asked, else only when no other
    model is active, so loading a second model never silently replaces the first."""
    if body.activate is not None:
        return body.activate
    active = gw.state.state.active_model
    return active is None or active == body.model_key


def _activation_note(gw: Gateway, activated: bool) -> str:
    active = gw.state.state.active_model
    if activated or active is None:
        return ""
    return f" Not activated: '{active}' stays the active model (send \"activate\": true to switch)."


async def _remember(
    gw: Gateway,
    body: LoadRequest,
    config: dict[str, Any],
    given: dict[str, Any] | None,
    activate: bool,
) -> dict[str, Any]:
    """Store the load config (and activate); returns the defaults now in force for the model."""
    if activate:
        state = await gw.state.activate(body.model_key, given, config)
        gw.bus.publish(
            "model_activate", modelKey=body.model_key, defaultInference=state.default_inference
        )
        return state.default_inference
    await gw.state.set_profile(body.model_key, config, given, merge=True)
    return gw.state.profile(body.model_key).default_inference or {}


def _with_threads(
    gw: Gateway, key: str, config: dict[str, Any], given: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A load's `cpuThreads` becomes the model's per-request default (LM Studio sets CPU
    threads per prediction), kept beside the defaults already in force for it."""
    threads = config.get("cpuThreads")
    if threads is None:
        return given
    if given is None:
        state = gw.state.state
        given = dict(
            state.default_inference
            if key == state.active_model
            else gw.state.profile(key).default_inference or {}
        )
    return {**given, "cpuThreads": threads}


def _not_applied(body: LoadRequest, outcome: LoadOutcome) -> dict[str, str]:
    """`notApplied` in the names the request used (`ttlSeconds`, `instanceId`...)."""
    reasons = dict(outcome.not_applied)
    named = reasons.pop("identifier", None)
    out = edition.load_not_applied(body, reasons, outcome.instance_id)
    if named is not None:
        for name, value in (("instanceId", body.instance_id), ("identifier", body.identifier)):
            if value is not None:
                out[name] = named
    return out


@router.post("/models/load")
async def load(body: LoadRequest, request: Request) -> dict[str, Any]:
    gw = gateway_of(request)
    key = body.model_key
    config = edition.with_ttl(body, body.load_config.wire() if body.load_config else {})
    given = body.default_inference.wire() if body.default_inference else None
    given = _with_threads(gw, key, config, given)
    activate = _activates(gw, body)
    member, own_key = manager_for(
        gw.upstreams, key, body.upstream, Placing.of(gw.scheduler) if gw.upstreams.routed else None
    )
    models, upstream = member.models, member.name
    at = _at(gw, upstream)
    if not await models.can_manage():
        if body.surface is not None:
            await models.chooser.choose((), body.surface)  # says why it is unavailable
        gw.bus.publish("model_load_start", modelKey=key, loadConfig=config, **at)
        defaults = await _remember(gw, body, config, given, activate)
        gw.bus.publish("model_load_complete", modelKey=key, activated=activate, loaded=False, **at)
        answer = {
            "status": "activated" if activate else "stored",
            "message": (
                f"'{key}' is {'now the active model' if activate else 'stored'} in lmgate. "
                "This upstream cannot be told to load models, so load it in LM Studio by hand."
                + _activation_note(gw, activate)
            ),
            "modelKey": key,
            "activated": activate,
            "loadConfig": config,
            "defaultInference": defaults,
            "workflow": load_workflow(key, config, activate, edition.wanted_identifier(body)),
            **at,
        }
        if not_applied := edition.stored_not_applied(body):
            answer["notApplied"] = not_applied
        return answer
    outcome = await models.load(
        own_key,
        config,
        new_instance=body.new_instance,
        identifier=edition.wanted_identifier(body),
        surface=body.surface,
    )
    if not outcome.already_loaded:
        gw.scheduler.loaded(own_key, upstream)  # lmgate's own: its idle TTL applies
    defaults = await _remember(gw, body, config, given, activate)
    what = "was already loaded" if outcome.already_loaded else "is loaded"
    loaded: dict[str, Any] = {
        "status": "loaded",
        "message": f"'{key}' {what} as instance '{outcome.instance_id}'."
        + _activation_note(gw, activate),
        "modelKey": key,
        "instanceId": outcome.instance_id,
        "surface": outcome.surface,
        "loadTimeSeconds": outcome.load_seconds,
        "alreadyLoaded": outcome.already_loaded,
        "replacedInstances": outcome.replaced,
        "applied": outcome.applied,
        "appliedAs": outcome.applied_as,
        "notApplied": _not_applied(body, outcome),
        "effectiveConfig": outcome.effective,
        "activated": activate,
        "activeModel": gw.state.state.active_model,
        "defaultInference": defaults,
        **at,
    }
    return loaded


@router.post("/models/unload")
async def unload(body: UnloadRequest, request: Request) -> dict[str, Any]:
    """On the upstream named, else on every upstream where the model (or instance) is loaded;
    each one acted on is named in the answer (`upstream`, or `upstreams` and `unloadedOn`)."""
    gw = gateway_of(request)
    target = body.model_key or body.instance_id or "all"
    members = await unload_targets(
        gw.upstreams,
        model_key=body.model_key,
        instance_id=body.instance_id,
        everything=body.all,
        name=body.upstream,
    )
    at = _at(gw, *(m.name for m in members))
    gw.bus.publish("model_unload_start", modelKey=body.model_key, target=target, **at)
    able = [m for m in members if await m.models.can_manage()]
    if not able:
        key = body.model_key or body.instance_id
        was_active = await gw.state.clear(None if body.all else key)
        gw.bus.publish("model_unload_complete", modelKey=key, wasActive=was_active, **at)
        return {
            "status": "cleared",
            "message": (
                f"'{target}' is no longer the active model."
                if was_active
                else f"'{target}' was not the active model; nothing changed in lmgate."
            ),
            "modelKey": key,
            "wasActive": was_active,
            "workflow": unload_workflow(None if body.all else key),
            **at,
        }
    unloaded: list[str] = []
    on: dict[str, list[str]] = {}
    was_active = False
    for member in able:
        gone, cleared = await member.models.unload(
            model_key=None if body.model_key is None else member.config.key_of(body.model_key),
            instance_id=body.instance_id,
            everything=body.all,
            elsewhere=_elsewhere(gw, member),
        )
        unloaded += gone
        on[member.name] = gone
        was_active = was_active or cleared
    at = _at(gw, *on)
    gw.bus.publish(
        "model_unload_complete",
        modelKey=body.model_key,
        unloaded=unloaded,
        wasActive=was_active,
        **at,
    )
    answer: dict[str, Any] = {
        "status": "unloaded",
        "message": f"unloaded {len(unloaded)} instance(s) of {target}.",
        "modelKey": body.model_key,
        "unloaded": unloaded,
        "wasActive": was_active,
        **at,
    }
    if gw.upstreams.routed:
        answer["unloadedOn"] = on
    if manual := [m.name for m in members if m not in able]:
        answer["notUnloaded"] = {
            name: "this upstream cannot be told to unload models: unload it there by hand"
            for name in manual
        }
    return answer


def _elsewhere(gw: Gateway, member: Member) -> Callable[[str], bool]:
    """Whether a model is still loaded on an upstream other than `member` (the activation
    stays while it is)."""
    others = [m for m in gw.upstreams if m is not member]

    def check(model: str) -> bool:
        return any(m.loaded(m.config.key_of(model)) for m in others)

    return check


@router.get("/state")
async def state(request: Request) -> dict[str, Any]:
    gw = gateway_of(request)
    body = gw.state.state.as_json()
    active = gw.state.state.active_model
    known = gw.watcher.synced_at is not None and active is not None
    loaded = loaded_anywhere(gw.upstreams, active) if known and active else None
    body["activeModelLoaded"] = loaded
    return body
