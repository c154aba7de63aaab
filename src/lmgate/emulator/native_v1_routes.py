"""REST v1 (`/api/v1/*`, LM Studio 0.4+): model listing, explicit load/unload, and chat.

The load endpoint is strict like LM Studio's: only documented fields (plus the reported
`parallel` and `ttl`) are accepted, anything else is a 400 `unrecognized_keys`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lmgate.emulator.generation import (
    Completion,
    Prompt,
    complete,
    max_tokens_of,
    new_hex_id,
    prompt_from_turns,
    timing,
)
from lmgate.emulator.inference import Prepared, prepare, request_json, state_of
from lmgate.emulator.listings import v1_models
from lmgate.emulator.replies import (
    EmulatorError,
    Surface,
    json_response,
    midstream_error_payload,
    missing_field,
)
from lmgate.emulator.streaming import EventStream, MidStreamFailure, event_frame, paced

_NUMBER = (int, float)
LOAD_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "context_length": (int,),
    "eval_batch_size": (int,),
    "flash_attention": (bool,),
    "num_experts": (int,),
    "offload_kv_cache_to_gpu": (bool,),
    "echo_load_config": (bool,),
    "parallel": (int,),
    "ttl": _NUMBER,
}


def _validate_load(body: dict[str, Any]) -> None:
    unknown = [key for key in body if key not in LOAD_FIELDS]
    if unknown:
        listed = ", ".join(f"'{key}'" for key in unknown)
        raise EmulatorError(
            400, f"Unrecognized key(s) in object: {listed}", code="unrecognized_keys"
        )
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise missing_field("model")
    for key, value in body.items():
        allowed = LOAD_FIELDS[key]
        wrong_bool = isinstance(value, bool) and bool not in allowed
        if wrong_bool or not isinstance(value, allowed):
            expected = "boolean" if bool in allowed else ("string" if str in allowed else "number")
            raise EmulatorError(
                400, f'Expected {expected} for "{key}"', code="invalid_type", param=key
            )


async def list_models(request: Request) -> Response:
    return json_response(v1_models(state_of(request).catalog))


async def load_model(request: Request) -> Response:
    state = state_of(request)
    body = request_json(request)
    _validate_load(body)
    spec = state.catalog.find_spec(body["model"])
    if spec is None:
        raise EmulatorError(
            404,
            f'Model "{body["model"]}" not found. Download it first or check the model key.',
            code="model_not_found",
            param="model",
            v1_type="model_not_found",
        )
    context = body.get("context_length", 1)
    if not 1 <= context <= spec.max_context_length:
        raise EmulatorError(
            400,
            f"context_length must be between 1 and {spec.max_context_length} for {spec.key}",
            code="invalid_value",
            param="context_length",
        )
    overrides = {k: v for k, v in body.items() if k not in ("model", "echo_load_config")}
    result = await state.catalog.load(spec, overrides, delay=state.config.load_delay)
    answer: dict[str, Any] = {
        "type": spec.type,
        "instance_id": result.instance.id,
        "load_time_seconds": round(result.load_seconds, 3),
        "status": "loaded",
    }
    if body.get("echo_load_config") is True:
        answer["load_config"] = dict(result.instance.config)
    return json_response(answer)


async def unload_model(request: Request) -> Response:
    state = state_of(request)
    instance_id = request_json(request).get("instance_id")
    if not isinstance(instance_id, str) or not instance_id:
        raise missing_field("instance_id")
    if state.catalog.remove(instance_id) is None:
        raise EmulatorError(
            404,
            f'No loaded model instance with id "{instance_id}"',
            code="model_not_found",
            param="instance_id",
            v1_type="model_not_found",
        )
    return json_response({"instance_id": instance_id})


def _chat_prompt(body: dict[str, Any], history: int) -> Prompt:
    raw = body.get("input")
    if isinstance(raw, str):
        turns: list[tuple[str, Any]] = [("user", raw)]
    elif isinstance(raw, list) and raw:
        turns = [("user", item) for item in raw if isinstance(item, dict | str)]
    else:
        raise missing_field("input")
    if isinstance(body.get("system_prompt"), str):
        turns.insert(0, ("system", body["system_prompt"]))
    prompt = prompt_from_turns(turns)
    return Prompt(prompt.seed, prompt.tokens + history)


async def chat(request: Request) -> Response:
    state = state_of(request)
    body = request_json(request)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise missing_field("model")
    previous = body.get("previous_response_id")
    if previous is not None and previous not in state.stored_responses:
        raise EmulatorError(
            400,
            f'Response "{previous}" not found',
            code="invalid_value",
            param="previous_response_id",
        )
    prompt = _chat_prompt(body, state.stored_responses.get(previous, 0) if previous else 0)
    overrides = {"context_length": body["context_length"]} if "context_length" in body else None
    prepared = await prepare(request, body, kind="llm", model=body["model"], overrides=overrides)
    completion = complete(prompt, max_tokens=max_tokens_of(body.get("max_output_tokens")))
    response_id = None
    if body.get("store", True) is not False:
        response_id = new_hex_id("resp_")
        state.remember_response(response_id, prompt.tokens + completion.completion_tokens)
    if prepared.stream:
        return EventStream(_stream(prepared, completion, response_id), state)
    return json_response(_result(prepared, completion, completion.text, response_id))


def _result(
    prepared: Prepared, completion: Completion, text: str, response_id: str | None
) -> dict[str, Any]:
    speed = timing(completion.completion_tokens, prepared.pacing.token_delay)
    stats: dict[str, Any] = {
        "input_tokens": completion.prompt_tokens,
        "total_output_tokens": completion.completion_tokens,
        "reasoning_output_tokens": 0,
        "tokens_per_second": speed["tokens_per_second"],
        "time_to_first_token_seconds": speed["time_to_first_token"],
    }
    if prepared.load_seconds is not None:
        stats["model_load_time_seconds"] = prepared.load_seconds
    result: dict[str, Any] = {
        "model_instance_id": prepared.instance.id,
        "output": [{"type": "message", "content": text}],
        "stats": stats,
    }
    if response_id is not None:
        result["response_id"] = response_id
    return result


async def _stream(
    prepared: Prepared, completion: Completion, response_id: str | None
) -> AsyncIterator[bytes]:
    def event(kind: str, **fields: Any) -> bytes:
        return event_frame(kind, {"type": kind, **fields})

    instance_id = prepared.instance.id
    yield event("chat.start", model_instance_id=instance_id)
    if prepared.load_seconds is not None:
        yield event("model_load.start", model_instance_id=instance_id)
        yield event("model_load.progress", model_instance_id=instance_id, progress=1.0)
        yield event(
            "model_load.end", model_instance_id=instance_id, load_time_seconds=prepared.load_seconds
        )
    yield event("prompt_processing.start")
    yield event("prompt_processing.progress", progress=1.0)
    yield event("prompt_processing.end")
    yield event("message.start")
    emitted: list[str] = []
    try:
        async for piece in paced(completion.pieces, prepared.pacing):
            emitted.append(piece)
            yield event("message.delta", content=piece)
    except MidStreamFailure:
        yield event_frame("error", midstream_error_payload(Surface.REST_V1))
    yield event("message.end")
    partial = Completion(tuple(emitted), completion.finish, None, completion.prompt_tokens)
    yield event("chat.end", result=_result(prepared, partial, partial.text, response_id))


def routes() -> list[Route]:
    return [
        Route("/api/v1/models", list_models, methods=["GET"]),
        Route("/api/v1/models/load", load_model, methods=["POST"]),
        Route("/api/v1/models/unload", unload_model, methods=["POST"]),
        Route("/api/v1/chat", chat, methods=["POST"]),
    ]
