"""An LM Studio 0.3 stand-in whose SDK websocket misbehaves once a load starts: it greets,
lists one model and takes the SDK's handshake like LM Studio, then answers `loadModel` with

* `huge`: one message that never ends (fragments of 1 MiB, forever),
* `endless`: load progress messages, small and without end,
* `bigframe`: single 64 MiB text frames, again and again.

Run: `python -m tests.loading.hostile_sdk PORT MODE`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

MODEL = "google/gemma-3-1b"
INFO = {
    "type": "llm",
    "modelKey": MODEL,
    "format": "gguf",
    "displayName": "Gemma 3 1B",
    "path": "lmstudio-community/gemma-3-1b-it-GGUF/gemma-3-1b-it-Q4_K_M.gguf",
    "sizeBytes": 800_000_000,
    "paramsString": "1B",
    "architecture": "gemma3",
    "maxContextLength": 32768,
    "vision": False,
    "trainedForToolUse": False,
}
HTTP = {
    "/lmstudio-greeting": {"lmstudio": True},
    "/v1/models": {"object": "list", "data": [{"id": MODEL, "object": "model"}]},
    "/api/v0/models": {
        "object": "list",
        "data": [
            {
                "id": MODEL,
                "object": "model",
                "type": "llm",
                "state": "not-loaded",
                "max_context_length": 32768,
            }
        ],
    },
}
MIB = 1024 * 1024


def answer(connection: ServerConnection, request: Request) -> Response | None:
    """Plain HTTP GETs get LM Studio 0.3's JSON; websocket upgrades go on."""
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return None
    body = HTTP.get(request.path.split("?")[0], {"error": "Unexpected endpoint or method."})
    data = json.dumps(body).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return Response(HTTPStatus.OK, "OK", headers, data)


async def fragments() -> AsyncIterator[str]:
    yield '{"type":"channelSend","channelId":1,"message":{"type":"progress","junk":"'
    chunk = "x" * MIB
    while True:
        yield chunk


async def misbehave(ws: ServerConnection, mode: str, channel: int) -> None:
    if mode == "huge":
        await ws.send(fragments())
    elif mode == "bigframe":
        message = {
            "type": "channelSend",
            "channelId": channel,
            "message": {"junk": "y" * (64 * MIB)},
        }
        frame = json.dumps(message)
        while True:
            await ws.send(frame)
    else:
        while True:
            message = {"type": "loadProgress", "progress": 0.5}
            await ws.send(
                json.dumps({"type": "channelSend", "channelId": channel, "message": message})
            )
            await asyncio.sleep(0)


async def handle(ws: ServerConnection, mode: str) -> None:
    await ws.recv()  # the handshake
    await ws.send(json.dumps({"success": True}))
    async for raw in ws:
        frame: dict[str, Any] = json.loads(raw)
        if frame.get("type") == "rpcCall":
            result: Any = [INFO] if frame["endpoint"] == "listDownloadedModels" else []
            await ws.send(
                json.dumps({"type": "rpcResult", "callId": frame["callId"], "result": result})
            )
        elif frame.get("type") == "channelCreate":
            await misbehave(ws, mode, int(frame["channelId"]))


async def main(port: int, mode: str) -> None:
    async with serve(
        lambda ws: handle(ws, mode),
        "127.0.0.1",
        port,
        process_request=answer,
        max_size=None,
        compression=None,
    ):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
