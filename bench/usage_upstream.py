"""The bench's fake upstream, plus the usage chunk a real server sends when asked for it.

lmgate asks streams for `stream_options.include_usage` and strips the extra chunk again; to
measure that work, this upstream ends every stream with such a chunk (before `[DONE]`), as
LM Studio does when asked. Everything else is `bench.fake_upstream` unchanged.

    python -m bench.usage_upstream --port 8000 --chunks 20 --chunk-delay-ms 0
"""

from __future__ import annotations

import orjson

from bench.fake_upstream import FakeUpstream, main

USAGE = {
    "id": "chatcmpl-bench",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "bench-model",
    "choices": [],
    "usage": {"prompt_tokens": 8, "completion_tokens": 20, "total_tokens": 28},
}


class UsageUpstream(FakeUpstream):
    def build(self, chunks: int) -> list[bytes]:
        frames = super().build(chunks)
        frame = b"data: " + orjson.dumps(USAGE) + b"\n\n"
        frames.insert(-1, b"%x\r\n%s\r\n" % (len(frame), frame))
        return frames


if __name__ == "__main__":
    main(
        UsageUpstream,
        prog="python -m bench.usage_upstream",
        description=__doc__,
        default_delay_ms=0.0,
    )
