"""REST v0 (`/api/v0/*`, LM Studio 0.3.6+): model rows with load state, and the OpenAI-style
inference routes enriched with `stats`, `model_info` and `runtime`."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lmgate.emulator import openai_routes
from lmgate.emulator.generation import Completion, timing
from lmgate.emulator.inference import Prepared, state_of
from lmgate.emulator.listings import v0_model, v0_models
from lmgate.emulator.replies import json_response

RUNTIME = {
    "name": "llama.cpp-linux-x86_64-avx2",
    "version": "1.52.1",
    "supported_formats": ["gguf"],
}


def v0_extras(prepared: Prepared, completion: Completion) -> dict[str, Any]:
    """The three objects v0 adds to an OpenAI-shaped answer."""
    instance = prepared.instance
    stats: dict[str, Any] = {
        **timing(completion.completion_tokens, prepared.pacing.token_delay),
        "stop_reason": completion.sdk_stop_reason,
    }
    return {
        "stats": stats,
        "model_info": {
            "arch": instance.spec.architecture,
            "quant": instance.spec.quantization,
            "format": instance.spec.format,
            "context_length": instance.context_length,
        },
        "runtime": RUNTIME,
    }


async def list_models(request: Request) -> Response:
    return json_response(v0_models(state_of(request).catalog))


async def get_model(request: Request) -> Response:
    catalog = state_of(request).catalog
    name = str(request.path_params["key"])
    spec = catalog.find_spec(name)
    if spec is None:
        return json_response({"error": f'Model "{name}" not found'}, status=404)
    return json_response(v0_model(catalog, spec))


async def chat_completions(request: Request) -> Response:
    return await openai_routes.chat_completions(request, extras=v0_extras)


async def completions(request: Request) -> Response:
    return await openai_routes.completions(request, extras=v0_extras)


def routes() -> list[Route]:
    return [
        Route("/api/v0/models", list_models, methods=["GET"]),
        Route("/api/v0/models/{key:path}", get_model, methods=["GET"]),
        Route("/api/v0/chat/completions", chat_completions, methods=["POST"]),
        Route("/api/v0/completions", completions, methods=["POST"]),
        Route("/api/v0/embeddings", openai_routes.embeddings, methods=["POST"]),
    ]
