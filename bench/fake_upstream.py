"""A deliberately minimal OpenAI-style upstream, so the bench measures lmgate and not the model.

Raw asyncio streams and pre-encoded responses keep its own cost to tens of microseconds per
request: the direct figures then show the floor, and the gap to them is what lmgate adds.
`POST /v1/chat/completions` answers a fixed completion, or with `"stream": true` an SSE stream
of `--chunks` events spaced `--chunk-delay-ms` apart (the first at once), then `[DONE]`.
A body may override both with `"bench": {"chunks": 20, "delay_ms": [50, 100]}` (each pause
drawn uniformly from the range): one upstream then serves fast and slow streams alike.

    python -m bench.fake_upstream --port 8000 --chunks 20 --chunk-delay-ms 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from typing import Any

import orjson

from bench.aio import run

_JSON = b"application/json"


def _response(status: bytes, body: bytes, content_type: bytes = _JSON) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
        b"" + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def _completion() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "bench-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello from the bench."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 8, "completion_tokens": 5, "total_tokens": 13},
        }
    )


def _sse_chunks(count: int) -> list[bytes]:
    """Each event pre-framed as one HTTP/1.1 chunk, so sending one is a single write."""
    frames = []
    for i in range(count):
        delta = {"role": "assistant", "content": "w0"} if i == 0 else {"content": f" w{i}"}
        event = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "bench-model",
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": "stop" if i == count - 1 else None}
            ],
        }
        frames.append(b"data: " + orjson.dumps(event) + b"\n\n")
    frames.append(b"data: [DONE]\n\n")
    return [b"%x\r\n%s\r\n" % (len(f), f) for f in frames]


_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_MODELS = _response(
    b"200 OK", orjson.dumps({"object": "list", "data": [{"id": "bench-model", "object": "model"}]})
)
_NOT_FOUND = _response(b"404 Not Found", b'{"error":{"message":"not found"}}')
_NO_LENGTH = _response(b"411 Length Required", b'{"error":{"message":"length required"}}')


class FakeUpstream:
    def __init__(self, chunks: int, chunk_delay: float) -> None:
        self.completion = _response(b"200 OK", _completion())
        self.chunks = chunks
        self.delay = chunk_delay
        self._framed: dict[int, list[bytes]] = {}

    def build(self, chunks: int) -> list[bytes]:
        """The framed events of one stream of `chunks` events (variants add their own)."""
        return _sse_chunks(chunks)

    def frames(self, chunks: int) -> list[bytes]:
        if chunks not in self._framed:
            self._framed[chunks] = self.build(chunks)
        return self._framed[chunks]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One keep-alive connection: requests in order, until the peer closes."""
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                line_end = head.index(b"\r\n")
                method, target, _ = head[:line_end].split(b" ", 2)
                if b"\r\ntransfer-encoding:" in head:
                    writer.write(_NO_LENGTH)
                    break
                length = 0
                at = head.find(b"\r\ncontent-length:")
                if at >= 0:
                    length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
                body = await reader.readexactly(length) if length else b""
                path = target.split(b"?", 1)[0]
                if method == b"post" and path == b"/v1/chat/completions":
                    request = orjson.loads(body)
                    if request.get("stream") is True:
                        await self._stream(writer, request.get("bench"))
                    else:
                        writer.write(self.completion)
                elif method == b"get" and path == b"/v1/models":
                    writer.write(_MODELS)
                else:
                    writer.write(_NOT_FOUND)
                await writer.drain()
                if b"\r\nconnection: close" in head:
                    break
        writer.close()

    async def _stream(self, writer: asyncio.StreamWriter, pace: dict[str, Any] | None) -> None:
        low = high = self.delay
        chunks = self.chunks
        if pace:
            chunks = int(pace.get("chunks", chunks))
            low, high = (d / 1000 for d in pace.get("delay_ms", (low * 1000, high * 1000)))
        frames = self.frames(chunks)
        writer.write(_SSE_HEAD)
        last = len(frames) - 1
        for i, frame in enumerate(frames):
            writer.write(frame)
            if i < last - 1 and high > 0:  # [DONE] follows the last event at once
                await writer.drain()
                await asyncio.sleep(low if low == high else random.uniform(low, high))
        writer.write(b"0\r\n\r\n")


async def serve(app: FakeUpstream, host: str, port: int) -> None:
    server = await asyncio.start_server(app.handle, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(
    factory: type[FakeUpstream] | None = None,
    *,
    prog: str = "python -m bench.fake_upstream",
    description: str | None = __doc__,
    default_delay_ms: float = 5.0,
) -> None:
    """The command line of this upstream and of its variants (`factory` builds the app)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--chunk-delay-ms", type=float, default=default_delay_ms)
    args = p.parse_args()
    app = (factory or FakeUpstream)(args.chunks, args.chunk_delay_ms / 1000)
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(app, args.host, args.port))


if __name__ == "__main__":
    main()
