"""Anthropic-compatible `POST /v1/messages` (LM Studio 0.4.1+).

Every stream frame carries an `event:` line, because the anthropic SDK drops unnamed frames.
`message_delta` reports cumulative usage, which the SDK copies into its final message.
`/v1/messages/count_tokens` is deliberately absent: LM Studio does not serve it.
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
    new_id,
    prompt_from_turns,
    stop_strings,
)
from lmgate.emulator.inference import Prepared, prepare, request_json
from lmgate.emulator.replies import EmulatorError, Surface, json_response, midstream_error_payload
from lmgate.emulator.streaming import EventStream, MidStreamFailure, event_frame, paced


def _prompt(body: dict[str, Any]) -> Prompt:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise EmulatorError(400, "messages: Field required")
    turns: list[tuple[str, Any]] = [
        (str(m.get("role", "user")), m.get("content")) for m in messages if isinstance(m, dict)
    ]
    if body.get("system"):
        turns.insert(0, ("system", body["system"]))
    return prompt_from_turns(turns)


def _usage(completion: Completion, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": completion.prompt_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


async def create_message(request: Request) -> Response:
    body = request_json(request)
    prompt = _prompt(body)
    prepared = await prepare(request, body, kind="llm", model=body.get("model"))
    completion = complete(
        prompt,
        max_tokens=max_tokens_of(body.get("max_tokens")),
        stop=stop_strings(body.get("stop_sequences")),
    )
    head: dict[str, Any] = {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": prepared.instance.id,
    }
    if prepared.stream:
        return EventStream(_stream(prepared, completion, head), prepared.state)
    return json_response(
        {
            **head,
            "content": [{"type": "text", "text": completion.text}],
            "stop_reason": completion.anthropic_stop,
            "stop_sequence": completion.stop_sequence,
            "usage": _usage(completion, completion.completion_tokens),
        }
    )


async def _stream(
    prepared: Prepared, completion: Completion, head: dict[str, Any]
) -> AsyncIterator[bytes]:
    def event(kind: str, **fields: Any) -> bytes:
        return event_frame(kind, {"type": kind, **fields})

    start = {
        **head,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(completion, 0),
    }
    yield event("message_start", message=start)
    yield event("content_block_start", index=0, content_block={"type": "text", "text": ""})
    try:
        async for piece in paced(completion.pieces, prepared.pacing):
            yield event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
    except MidStreamFailure:
        yield event_frame("error", midstream_error_payload(Surface.ANTHROPIC))
        return
    yield event("content_block_stop", index=0)
    yield event(
        "message_delta",
        delta={"stop_reason": completion.anthropic_stop, "stop_sequence": completion.stop_sequence},
        usage=_usage(completion, completion.completion_tokens),
    )
    yield event("message_stop")


def routes() -> list[Route]:
    return [Route("/v1/messages", create_message, methods=["POST"])]
