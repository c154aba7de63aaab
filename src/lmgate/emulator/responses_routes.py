"""OpenAI Responses API (`POST /v1/responses`, LM Studio 0.3.29+).

Streams use named events with a growing `sequence_number`, in the order the official SDK's
stream accumulator expects, ending in `response.completed` (or `response.incomplete` when
`max_output_tokens` cut the reply) which carries the final usage.
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
)
from lmgate.emulator.inference import Prepared, prepare, request_json, state_of
from lmgate.emulator.replies import EmulatorError, json_response
from lmgate.emulator.streaming import EventStream, MidStreamFailure, event_frame, paced


def _prompt(body: dict[str, Any], history_tokens: int) -> Prompt:
    raw = body.get("input")
    if isinstance(raw, str):
        turns: list[tuple[str, Any]] = [("user", raw)]
    elif isinstance(raw, list):
        turns = [
            (str(item.get("role", "user")), item.get("content", item.get("output")))
            for item in raw
            if isinstance(item, dict)
        ]
    else:
        raise EmulatorError(400, "'input' field is required", plain=True)
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        turns.insert(0, ("system", instructions))
    prompt = prompt_from_turns(turns)
    return Prompt(seed=prompt.seed, tokens=prompt.tokens + history_tokens)


def _message(item_id: str, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [part] if status != "in_progress" else [],
    }


def _response(
    head: dict[str, Any], completion: Completion, item_id: str, *, done: bool
) -> dict[str, Any]:
    """The response object; `done=False` gives the in-progress snapshot streams start with."""
    if not done:
        return {**head, "status": "in_progress", "output": [], "usage": None}
    incomplete = completion.finish == "max_tokens"
    status = "incomplete" if incomplete else "completed"
    return {
        **head,
        "status": status,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "output": [_message(item_id, completion.text, status)],
        "usage": {
            "input_tokens": completion.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        },
    }


async def create_response(request: Request) -> Response:
    body = request_json(request)
    state = state_of(request)
    previous = body.get("previous_response_id")
    history = 0
    if previous is not None:
        if previous not in state.stored_responses:
            raise EmulatorError(
                400,
                f"Response with id '{previous}' not found.",
                code="previous_response_not_found",
                param="previous_response_id",
            )
        history = state.stored_responses[previous]
    prompt = _prompt(body, history)
    prepared = await prepare(request, body, kind="llm", model=body.get("model"))
    completion = complete(prompt, max_tokens=max_tokens_of(body.get("max_output_tokens")))
    head: dict[str, Any] = {
        "id": new_hex_id("resp_"),
        "object": "response",
        "created_at": prepared.created,
        "model": prepared.instance.id,
        "previous_response_id": previous,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "error": None,
        "incomplete_details": None,
        "parallel_tool_calls": True,
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "tool_choice": "auto",
        "tools": [],
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "store": body.get("store", True) is not False,
        "metadata": {},
    }
    if head["store"]:
        state.remember_response(head["id"], prompt.tokens + completion.completion_tokens)
    item_id = new_hex_id("msg_")
    if prepared.stream:
        return EventStream(_stream(prepared, completion, head, item_id), prepared.state)
    return json_response(_response(head, completion, item_id, done=True))


async def _stream(
    prepared: Prepared, completion: Completion, head: dict[str, Any], item_id: str
) -> AsyncIterator[bytes]:
    sequence = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        sequence += 1
        return event_frame(kind, {"type": kind, "sequence_number": sequence - 1, **fields})

    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    snapshot = _response(head, completion, item_id, done=False)
    yield event("response.created", response=snapshot)
    yield event("response.in_progress", response=snapshot)
    yield event(
        "response.output_item.added", output_index=0, item=_message(item_id, "", "in_progress")
    )
    empty_part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    yield event("response.content_part.added", **where, part=empty_part)
    try:
        async for piece in paced(completion.pieces, prepared.pacing):
            yield event("response.output_text.delta", **where, delta=piece, logprobs=[])
    except MidStreamFailure:
        message = "The model has crashed without additional information. (Exit code: 11)"
        yield event("error", code="server_error", message=message, param=None)
        return
    final = _response(head, completion, item_id, done=True)
    item = final["output"][0]
    yield event("response.output_text.done", **where, text=completion.text, logprobs=[])
    yield event("response.content_part.done", **where, part=item["content"][0])
    yield event("response.output_item.done", output_index=0, item=item)
    yield event(f"response.{final['status']}", response=final)


def routes() -> list[Route]:
    return [Route("/v1/responses", create_response, methods=["POST"])]
