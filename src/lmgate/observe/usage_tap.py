"""Token usage, time to first token and live progress, read off every inference answer.

`UsageHook` runs last before a request goes upstream. Streamed chat and completions only
report usage when asked, so it asks (`stream_options.include_usage`) when the client did not,
and its tap then removes that one extra chunk again: the client gets exactly the frames it
would have got without lmgate. Everything else passes unchanged; the tap parses a copy.
Results land on the `Exchange` (`tokens_in`, `tokens_out`, `ttft_ms`, `tokens_streamed`)
before observers see it finish. A stream that ends without a usage report (cancelled, cut
off) gets its relayed output frames as `tokens_out`, flagged `tokens_estimated`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import orjson

from lmgate.exchange import Exchange
from lmgate.hooks import ProxyRequest, ResponseTap
from lmgate.observe.answers import STATS_ATTRIBUTE, USAGE_KEYS, Reading, read_body
from lmgate.observe.stream_scan import StreamScanner

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
    def __init__(self, sink: TextSink | None = None) -> None:
        self.sink = sink

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        if request.kind not in USAGE_KEYS or request.body is None:
            return None
        strip = ex.streamed and request.kind in _ASKS_FOR_USAGE and _ask_for_usage(request)
        if self.sink is not None:
            self.sink.request(ex, request.kind, request.body)
        return UsageTap(ex, request.kind, strip=strip, sink=self.sink)


class _Body:
    """A plain answer, kept (up to `BODY_LIMIT`) to be read whole at the end."""

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def feed(self, chunk: bytes) -> bytes:
        self.size += len(chunk)
        if self.size <= BODY_LIMIT:
            self.chunks.append(chunk)
        return chunk

    def whole(self) -> bytes | None:
        chunks, self.chunks = self.chunks, []
        if not chunks or self.size > BODY_LIMIT:
            return None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class UsageTap(Reading):
    """A plain answer is read into the tap itself; a stream into its scanner (a `Reading`
    too). `feed` is the bound method of another object (the body or the stream scanner), set
    when the answer starts: the relay calls it per chunk without a call in between, and the
    tap is in no reference cycle, so it is freed as the request ends, not by the
    collector."""

    scanner: StreamScanner | None = None
    body: _Body | None = None
    feed: Callable[[bytes], bytes]

    def __init__(self, ex: Exchange, kind: str, *, strip: bool, sink: TextSink | None) -> None:
        self.ex = ex
        self.kind = kind
        self.strip = strip
        self.sink = sink
        if sink is not None:
            self.collect_text(sink.limit)

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        named = dict(headers)  # built in C; a loop over the headers costs more
        if not named.get(b"content-type", b"").startswith(b"text/event-stream"):
            body = self.body = _Body()
            self.feed = body.feed
            return headers
        scanner = self.scanner = StreamScanner(self.ex, self.kind, strip=self.strip)
        if self.sink is not None:
            scanner.collect_text(self.text_limit)
        self.feed = scanner.feed
        if self.strip and b"content-length" in named:  # the length changes without the usage
            return [(k, v) for k, v in headers if k != b"content-length"]
        return headers

    def end(self) -> bytes:
        last = b""
        if self.scanner is not None:
            last = self.scanner.end()
        elif self.body is not None and (body := self.body.whole()) is not None:
            try:
                read_body(self.kind, orjson.loads(body), self)
            except orjson.JSONDecodeError:
                pass
        self._settle()
        return last

    def _settle(self) -> None:
        ex, scanner = self.ex, self.scanner
        reading: Reading = self if scanner is None else scanner
        if reading.tokens_in is not None:
            ex.tokens_in = reading.tokens_in
        if reading.tokens_out is not None:
            ex.tokens_out = reading.tokens_out
        elif scanner is not None and ex.tokens_streamed:
            # No usage came (cancelled, cut off, or never sent): the frames relayed are the
            # best count there is, about one per token, and marked as estimated.
            ex.tokens_out = ex.tokens_streamed
            ex.tokens_estimated = True
        if reading.error is not None and ex.error is None:
            ex.error = reading.error
        if reading.stats is not None:
            ex.attributes[STATS_ATTRIBUTE] = reading.stats
        if self.sink is not None:
            self.sink.response(ex, "".join(reading.text))
