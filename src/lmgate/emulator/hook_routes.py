"""Test hooks under `/__emulator/`: an emulator-only extension, invisible to LM Studio's own
surfaces, unauthenticated and left out of the request log.

  GET    /__emulator/requests   JSON array of the last requests received, oldest first
  DELETE /__emulator/requests   forget them
  GET    /__emulator/stats      stream and load counters
  GET    /__emulator/generations  answers generating now and the most at once, per model;
                                 unloads of a model while it was generating (a count,
                                 and the last 100: model, instance_id, generating, at)
  POST   /__emulator/load       {"model", "context_length"?, "parallel"?, "ttl"?, "identifier"?}
                                 load as if from LM Studio's UI (or `lms load`)
  POST   /__emulator/unload     {"instance_id"} unload as if from LM Studio's UI
  POST   /__emulator/reset      back to the startup state (instances, log, counters)
  GET    /__emulator/load-configs  load configs received over the SDK websocket (sdk_endpoints)
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lmgate.emulator.inference import request_json, state_of
from lmgate.emulator.replies import json_response


async def list_requests(request: Request) -> Response:
    return json_response(list(state_of(request).requests))


async def clear_requests(request: Request) -> Response:
    state = state_of(request)
    cleared = len(state.requests)
    state.requests.clear()
    return json_response({"cleared": cleared})


async def stats(request: Request) -> Response:
    return json_response(state_of(request).stats())


async def generations(request: Request) -> Response:
    return json_response(state_of(request).generations())


async def load(request: Request) -> Response:
    state = state_of(request)
    body = request_json(request)
    spec = state.catalog.find_spec(str(body.get("model", "")))
    if spec is None:
        return json_response({"error": f"unknown model {body.get('model')!r}"}, status=404)
    overrides = {k: body[k] for k in ("context_length", "parallel") if isinstance(body.get(k), int)}
    identifier = body.get("identifier")
    if identifier is not None and state.catalog.find_instance(str(identifier)) is not None:
        return json_response({"error": f"identifier {identifier!r} is taken"}, status=409)
    ttl = body.get("ttl")
    instance = state.catalog.add(
        spec, overrides, ttl=float(ttl) if isinstance(ttl, int | float) and ttl > 0 else None
    )
    if identifier is not None:
        instance.id = str(identifier)
    return json_response(
        {"instance_id": instance.id, "model": spec.key, "config": dict(instance.config)}
    )


async def unload(request: Request) -> Response:
    state = state_of(request)
    instance_id = str(request_json(request).get("instance_id", ""))
    if state.catalog.remove(instance_id) is None:
        return json_response({"error": f"no loaded instance {instance_id!r}"}, status=404)
    return json_response({"instance_id": instance_id})


async def reset(request: Request) -> Response:
    state_of(request).reset()
    return json_response({"reset": True})


def routes() -> list[Route]:
    return [
        Route("/__emulator/requests", list_requests, methods=["GET"]),
        Route("/__emulator/requests", clear_requests, methods=["DELETE"]),
        Route("/__emulator/stats", stats, methods=["GET"]),
        Route("/__emulator/generations", generations, methods=["GET"]),
        Route("/__emulator/load", load, methods=["POST"]),
        Route("/__emulator/unload", unload, methods=["POST"]),
        Route("/__emulator/reset", reset, methods=["POST"]),
    ]
