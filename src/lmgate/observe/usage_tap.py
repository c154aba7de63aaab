"""Token usage, time to first token and live progress, read off every inference answer.

`UsageHook` runs last before a request goes upstream. Streamed chat and completions only
report usage when asked, so it asks (`stream_options.include_usage`) when the client did not,
and its tap then removes that one extra chunk again: the client gets exactly the frames it
would have got without lmgate. Everything else passes unchanged; the tap parses a copy.
Results land on the `Exchange` (`tokens_in`, `tokens_out`, `ttft_ms`, `tokens_streamed`)
before observers see it finish.
"""

from __future__ import annotations

import time
from typing import Protocol

import orjson

from lmgate.exchange import Exchange
from lmgate.observe.answers import (
    USAGE_KEYS,
    Frame,
    FrameSplitter,
    Reading,
    parse_frame,
    read_body,
    read_frame,
)
from lmgate.proxy.hooks import ProxyRequest, ResponseTap

BODY_LIMIT = 8 << 20  # larger plain answers (huge embedding batches) go unread
_ASKS_FOR_USAGE = ("chat", "completions")


class TextSink(Protocol):
    """Where output text goes when prompt logging is on (see `prompt_log.py`)."""

    limit: int

    def request(self, ex: Exchange, kind: str, body: dict[str, object]) -> None: ...

    def response(self, ex: Exchange, text: str) -> None: ...


def _ask_for_usage(request: ProxyRequest) -> bool:
    """Turn `include_usage` on; True when lmgate did so and the client must not see it."""
    assert request.body is not None
    options = request.body.get("stream_options")
    if options is None:
        request.set("stream_options", {"include_usage": True})
        return True
    if isinstance(options, dict) and options.get("include_usage") is not True:
        request.set("stream_options", {**options, "include_usage": True})
        return True
    return False


class UsageHook:
    def __init__(self, text: TextSink | None = None) -> None:
        self.text = text

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        if request.kind not in USAGE_KEYS or request.body is None:
            return None
        strip = ex.streamed and request.kind in _ASKS_FOR_USAGE and _ask_for_usage(request)
        if self.text is not None:
            self.text.request(ex, request.kind, request.body)
        return UsageTap(ex, request.kind, strip=strip, text=self.text)


class UsageTap:
    def __init__(self, ex: Exchange, kind: str, *, strip: bool, text: TextSink | None) -> None:
        self.ex = ex
        self.kind = kind
        self.strip = strip
        self.text = text
        self.reading = Reading(text_limit=text.limit if text is not None else 0)
        self.stream = False
        self.frames = FrameSplitter()
        self.body: list[bytes] = []
        self.body_size = 0
        self.lazy = False  # the first token was seen and no text is wanted: parse less

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        self.stream = any(
            k == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers
        )
        if not self.stream:
            self.strip = False
        elif self.strip:  # the length changes when the usage chunk goes
            headers = [(k, v) for k, v in headers if k != b"content-length"]
        return headers

    def feed(self, chunk: bytes) -> bytes:
        if not self.stream:
            self.body_size += len(chunk)
            if self.body_size <= BODY_LIMIT:
                self.body.append(chunk)
            return chunk
        carried = bool(self.frames.tail)
        frames = self.frames.feed(chunk)
        if not self.strip:
            for frame in frames:
                self._frame(frame)
            return chunk
        kept = [frame for frame in frames if self._frame(frame) is not Frame.USAGE_ONLY]
        if len(kept) == len(frames) and not carried and not self.frames.tail:
            return chunk
        return b"".join(kept)

    def end(self) -> bytes:
        last = b""
        if self.stream:
            rest = self.frames.rest()
            if rest and self._frame(rest) is not Frame.USAGE_ONLY and self.strip:
                last = rest  # held back while it was incomplete
        elif self.body and self.body_size <= BODY_LIMIT:
            try:
                read_body(self.kind, orjson.loads(b"".join(self.body)), self.reading)
            except orjson.JSONDecodeError:
                pass
            self.body = []
        self._settle()
        return last

    def _frame(self, frame: bytes) -> Frame:
        ex = self.ex
        if self.lazy and frame.startswith(b"data: {") and b'"usage"' not in frame:
            if b'"error"' not in frame:
                ex.tokens_streamed += 1
                return Frame.OUTPUT
        event, data = parse_frame(frame)
        if data is None:
            return Frame.OTHER
        kind = read_frame(self.kind, event, data, self.reading, self.lazy)
        if kind is Frame.OUTPUT:
            ex.tokens_streamed += 1
            if ex.ttft_ms is None:
                ex.ttft_ms = (time.perf_counter() - ex.started) * 1000.0
                self.lazy = not self.reading.text_limit
        return kind

    def _settle(self) -> None:
        ex, reading = self.ex, self.reading
        if reading.tokens_in is not None:
            ex.tokens_in = reading.tokens_in
        if reading.tokens_out is not None:
            ex.tokens_out = reading.tokens_out
        if reading.error is not None and ex.error is None:
            ex.error = reading.error
        if self.text is not None:
            self.text.response(ex, "".join(reading.text))
