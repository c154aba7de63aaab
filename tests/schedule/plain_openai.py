"""A plain OpenAI-compatible server (no LM Studio surface): `/v1/models` and streamed
`/v1/chat/completions` that pace their tokens and count the answers generated at once
(`GET /__stats`), so tests can prove the scheduler's slots and queue in front of it.

    python -m tests.schedule.plain_openai PORT TOKEN_DELAY
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

MODELS = ("plain-model-a", "plain-model-b")
STATS: dict[str, Any] = {"generating": 0, "peak": 0, "bodies": []}


async def models(_: Request) -> JSONResponse:
    data = [{"id": m, "object": "model", "owned_by": "plain"} for m in MODELS]
    return JSONResponse({"object": "list", "data": data})


async def stats(_: Request) -> JSONResponse:
    return JSONResponse(STATS)


async def chat(request: Request) -> StreamingResponse:
    body = await request.json()
    STATS["bodies"].append(json.dumps(body))
    delay = float(request.app.state.delay)
    tokens = int(body.get("max_tokens") or 4)

    async def stream() -> AsyncIterator[bytes]:
        STATS["generating"] += 1
        STATS["peak"] = max(STATS["peak"], STATS["generating"])
        try:
            for i in range(tokens):
                await asyncio.sleep(delay)
                finish = "length" if i == tokens - 1 else None
                chunk = {
                    "id": "chatcmpl-plain",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": finish}
                    ],
                }
                yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
        finally:
            STATS["generating"] -= 1

    return StreamingResponse(stream(), media_type="text/event-stream")


def main() -> None:
    port, delay = int(sys.argv[1]), float(sys.argv[2])
    app = Starlette(
        routes=[
            Route("/v1/models", models),
            Route("/__stats", stats),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )
    app.state.delay = delay
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
