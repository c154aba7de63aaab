"""Stand-ins for other kinds of upstream, as far as lmgate looks at them: Ollama (its version,
native model lists and OpenAI-compatible chat) and llama.cpp's server (`/props` with its slots).

    python -m tests.upstreams.fake_kinds ollama|llamacpp PORT MODEL...
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SLOTS = 3


def build(kind: str, models: list[str]) -> Starlette:
    seen: list[dict[str, Any]] = []

    async def listing(request: Request) -> JSONResponse:
        return JSONResponse(
            {"object": "list", "data": [{"id": m, "object": "model"} for m in models]}
        )

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append({"path": request.url.path, "body": body})
        reply = {"role": "assistant", "content": f"{kind} says hi"}
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model"),
                "choices": [{"index": 0, "message": reply, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
            }
        )

    async def requests(request: Request) -> JSONResponse:
        return JSONResponse({"requests": seen})

    routes = [
        Route("/v1/models", listing),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/__emulator/requests", requests),
    ]
    if kind == "ollama":

        async def version(request: Request) -> JSONResponse:
            return JSONResponse({"version": "0.9.0"})

        async def tags(request: Request) -> JSONResponse:
            pulled = [{"name": m, "model": m, "size": 2_000_000_000} for m in models]
            return JSONResponse({"models": pulled})

        async def ps(request: Request) -> JSONResponse:
            return JSONResponse({"models": [{"name": models[0], "model": models[0]}]})

        routes += [Route("/api/version", version), Route("/api/tags", tags), Route("/api/ps", ps)]
    else:

        async def props(request: Request) -> JSONResponse:
            return JSONResponse({"total_slots": SLOTS, "model_path": f"/models/{models[0]}.gguf"})

        routes.append(Route("/props", props))
    return Starlette(routes=routes)


if __name__ == "__main__":
    kind, port, *names = sys.argv[1:]
    uvicorn.run(build(kind, names), host="127.0.0.1", port=int(port), log_level="warning")
