"""OpenAI-compatible `/v1/models`, chat/completions, completions and embeddings.

The same handlers serve the REST v0 twins (`/api/v0/...`): those pass an `extras` callback
that adds v0's `stats`/`model_info`/`runtime`, while `/v1` answers carry `"stats": {}`.
Streams are unnamed `data:` frames ending in `data: [DONE]`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lmgate.emulator.generation import (
    Completion,
    Prompt,
    complete,
    embedding_vector,
    max_tokens_of,
    new_id,
    prompt_from_turns,
    stop_strings,
    text_of,
    word_count,
)
from lmgate.emulator.inference import Prepared, prepare, request_json, state_of
from lmgate.emulator.listings import openai_models
from lmgate.emulator.quirks import check_response_format
from lmgate.emulator.replies import EmulatorError, Surface, json_response, midstream_error_payload
from lmgate.emulator.streaming import (
    DONE_FRAME,
    EventStream,
    MidStreamFailure,
    data_frame,
    paced,
)

Extras = Callable[[Prepared, Completion], dict[str, Any]]


def _no_extras(prepared: Prepared, completion: Completion) -> dict[str, Any]:
    return {"stats": {}}


def _usage(completion: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "total_tokens": completion.prompt_tokens + completion.completion_tokens,
    }


async def list_models(request: Request) -> Response:
    state = state_of(request)
    return json_response(openai_models(state.catalog, jit=state.config.jit))


def _chat_prompt(body: dict[str, Any]) -> Prompt:
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise EmulatorError(400, "'messages' field is required and must be an array", plain=True)
    return prompt_from_turns(
        (str(m.get("role", "user")), m.get("content")) for m in messages if isinstance(m, dict)
    )


def _completion_prompt(body: dict[str, Any]) -> Prompt:
    text = text_of(body.get("prompt"))
    return Prompt(seed=text, tokens=word_count(text))


async def chat_completions(request: Request, extras: Extras = _no_extras) -> Response:
    return await _generate(request, chat=True, extras=extras)


async def completions(request: Request, extras: Extras = _no_extras) -> Response:
    return await _generate(request, chat=False, extras=extras)


async def _generate(request: Request, *, chat: bool, extras: Extras) -> Response:
    body = request_json(request)
    check_response_format(body)
    prompt = _chat_prompt(body) if chat else _completion_prompt(body)
    prepared = await prepare(request, body, kind="llm", model=body.get("model"))
    completion = complete(
        prompt,
        max_tokens=max_tokens_of(body.get("max_tokens")),
        stop=stop_strings(body.get("stop")),
    )
    head = {
        "id": new_id("chatcmpl-" if chat else "cmpl-"),
        "object": "chat.completion" if chat else "text_completion",
        "created": prepared.created,
        "model": prepared.instance.id,
    }
    if prepared.stream:
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        frames = _stream(prepared, completion, head, chat=chat, include_usage=include_usage)
        return EventStream(frames, prepared.state)
    choice: dict[str, Any] = {"index": 0}
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": completion.text}
        if prepared.state.config.has_v1_api:
            message.update(reasoning_content="", tool_calls=[])
        choice.update(logprobs=None, finish_reason=completion.openai_finish, message=message)
    else:
        choice.update(text=completion.text, logprobs=None, finish_reason=completion.openai_finish)
    usage: dict[str, Any] = _usage(completion)
    if chat:
        usage["completion_tokens_details"] = {"reasoning_tokens": 0}
    result = {**head, "choices": [choice], "usage": usage, **extras(prepared, completion)}
    if chat:
        result["system_fingerprint"] = prepared.instance.id
    return json_response(result)


async def _stream(
    prepared: Prepared,
    completion: Completion,
    head: dict[str, Any],
    *,
    chat: bool,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    head = {**head, "object": "chat.completion.chunk" if chat else "text_completion"}
    if chat:
        head["system_fingerprint"] = prepared.instance.id

    def chunk(piece: str | None, finish: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0}
        if chat:
            choice["delta"] = {} if piece is None else {"role": "assistant", "content": piece}
        else:
            choice["text"] = piece or ""
        return {**head, "choices": [{**choice, "logprobs": None, "finish_reason": finish}]}

    try:
        async for piece in paced(completion.pieces, prepared.pacing):
            yield data_frame(chunk(piece, None))
    except MidStreamFailure:
        yield data_frame(midstream_error_payload(Surface.OPENAI))
        return
    yield data_frame(chunk(None, completion.openai_finish))
    if include_usage:
        yield data_frame({**head, "choices": [], "usage": _usage(completion)})
    yield DONE_FRAME


async def embeddings(request: Request) -> Response:
    body = request_json(request)
    raw = body.get("input")
    inputs = raw if isinstance(raw, list) else [raw]
    texts = [item if isinstance(item, str) else text_of(item) or str(item) for item in inputs]
    if raw is None or not texts:
        raise EmulatorError(400, "'input' field is required", plain=True)
    prepared = await prepare(request, body, kind="embedding", model=body.get("model"))
    data = [
        {"object": "embedding", "embedding": embedding_vector(text), "index": index}
        for index, text in enumerate(texts)
    ]
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": prepared.instance.id,
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }
    )


def routes() -> list[Route]:
    return [
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
    ]
