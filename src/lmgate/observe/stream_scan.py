"""Reading a stream as it passes, at a cost close to nothing per token.

Until the first token, every frame is parsed. After it, only three things still matter: the
usage report, an error, the final stats, all of which name themselves (`usage`, `error`,
`stats`). So the scanner searches each chunk for those words and parses only the frames that
hold one; the frames in between are counted as tokens in one call, however many there are.
(A token that happens to say "usage" costs one parse, nothing more.)

Chunks may hold many frames or end inside one. The unfinished frame is carried to the next
chunk; when the usage chunk has to be removed it is also held back, so that a frame is never
half sent. Streams framed with `\\r\\n` (rare) take a slower frame-by-frame path.
"""

from __future__ import annotations

import time

from lmgate.exchange import Exchange
from lmgate.observe.answers import (
    Frame,
    FrameSplitter,
    Reading,
    parse_frame,
    read_frame,
    read_openai_frame,
    says_output,
)

_NAMED = ("responses", "messages", "native_chat")  # `event:` lines; the rest `data:` only


def _around(data: bytes, at: int) -> tuple[int, int]:
    """Where the whole frame holding position `at` starts, and where it ends (after its blank
    line): `data` is whole frames."""
    start = data.rfind(b"\n\n", 0, at) + 2
    return (start if start > 1 else 0), data.find(b"\n\n", at) + 2


class StreamScanner(Reading):
    """One per stream, and what the stream said (a `Reading`). What every stream starts
    with is the class's own, not written per stream."""

    limit = 1 << 20  # a "frame" longer than this is handed on unread
    tail = b""
    lazy = False  # past the first token, and no output text is wanted
    crlf: FrameSplitter | None = None

    def __init__(self, ex: Exchange, kind: str, *, strip: bool) -> None:
        self.ex = ex
        self.kind = kind
        self.strip = strip  # remove the usage-only chunk (lmgate asked for it)
        self.named = kind in _NAMED
        self.token = b"delta\ndata:" if self.named else b"data: {"  # one per generated token

    def feed(self, chunk: bytes) -> bytes:
        """What to send on: `chunk` itself unless a frame was removed or is held back."""
        # The usual chunk, whole frames of tokens and nothing else, comes once per token. Its
        # checks are written for speed: `partition` takes one argument, and a method that
        # parses none costs a third less than `find`; a slice compares cheaper than `endswith`.
        if (
            self.lazy
            and not self.tail
            and chunk[-2:] == b"\n\n"
            and not chunk.partition(b"usage")[1]
            and not chunk.partition(b"error")[1]
            and self.crlf is None
            and (not self.named or not chunk.partition(b"stats")[1])
        ):
            self.ex.tokens_streamed += chunk.count(self.token)
            return chunk
        if not self.named and not self.tail and self.crlf is None and chunk.endswith(b"\n\n"):
            self._first_token_in(chunk)
            if self.lazy and chunk.find(b"\r") < 0:
                return self._marked(chunk)
        if self.crlf is not None or chunk.find(b"\r") >= 0:
            return self._feed_crlf(chunk)
        carried = bool(self.tail)
        data = self.tail + chunk if carried else chunk
        cut = data.rfind(b"\n\n") + 2
        if cut == 1:
            cut = 0
        if len(data) - cut > self.limit:
            cut = len(data)
        complete = data if cut == len(data) else data[:cut]
        self.tail = data[cut:] if cut < len(data) else b""
        kept: list[bytes] = []
        removed = self._scan(complete, kept)
        if not self.strip or (not removed and not carried and not self.tail):
            return chunk
        return b"".join(kept)

    def end(self) -> bytes:
        """At the end of the stream: read an unterminated last frame; return it if held."""
        if self.crlf is not None:
            self.tail = self.crlf.rest()
        tail, self.tail = self.tail, b""
        if tail and self._frame(tail) is not Frame.USAGE_ONLY and self.strip:
            return tail
        return b""

    def _scan(self, data: bytes, kept: list[bytes]) -> bool:
        """Read whole frames in `data` into `kept` (all but a removed usage chunk)."""
        self._first_token_in(data)
        removed, pos, size = False, 0, len(data)
        while pos < size:
            if not self.lazy:
                start, hit = pos, pos
            else:
                hit = self._marker(data, pos)
                if hit < 0:
                    piece = data[pos:] if pos else data
                    self.ex.tokens_streamed += piece.count(self.token)
                    kept.append(piece)
                    return removed
                start = data.rfind(b"\n\n", pos, hit) + 2
                if start < pos + 2:
                    start = pos
                if start > pos:
                    piece = data[pos:start]
                    self.ex.tokens_streamed += piece.count(self.token)
                    kept.append(piece)
            end = data.find(b"\n\n", hit) + 2
            if end == 1:
                end = size
            frame = data[start:end]
            if self._frame(frame) is Frame.USAGE_ONLY and self.strip:
                removed = True
            else:
                kept.append(frame)
            pos = end
        return removed

    def _marked(self, chunk: bytes) -> bytes:
        """Whole OpenAI frames past the first token, some holding a marker word: the chunk's
        frames are counted in one pass, and only the last frame naming `usage` (found from the
        end of the chunk, where the usage report is: a stream reports it once, at its end)
        and the first naming `error` (an error ends a stream) are parsed. The later of the
        two goes first, so that removing it leaves the other where it was found."""
        self.ex.tokens_streamed += chunk.count(b"data: {")
        usage, error = chunk.rfind(b"usage"), chunk.find(b"error")
        later, earlier = (usage, error) if usage > error else (error, usage)
        if later < 0:
            return chunk  # tokens only
        start, end = _around(chunk, later)
        out = self._read_marked(chunk, start, end)
        if earlier >= 0:
            first, end = _around(chunk, earlier)
            if first != start:  # not both words in one frame
                out = self._read_marked(out, first, end)
        return out

    def _read_marked(self, chunk: bytes, start: int, end: int) -> bytes:
        """The frame at `start:end` of a chunk `_marked` counted already (it is counted again
        if it is output); the chunk without it if it is the usage chunk to remove."""
        frame = chunk[start:end]
        if frame.startswith(b"data: {"):
            self.ex.tokens_streamed -= 1
        if self._frame(frame) is Frame.USAGE_ONLY and self.strip:
            return chunk[:start] + chunk[end:]
        return chunk

    def _first_token_in(self, data: bytes) -> None:
        """Before the first token: whole frames that carry one (told from the bytes) make now
        the first token's time (the whole chunk arrived now), unless output text is collected
        frame by frame."""
        if self.lazy or self.text_limit:
            return
        if (data.find(b"delta\ndata:") >= 0) if self.named else says_output(data):
            self._first_token()

    def _marker(self, data: bytes, pos: int) -> int:
        """Where the next word worth a parse starts, or -1."""
        usage, error = data.find(b"usage", pos), data.find(b"error", pos)
        hit = usage if error < 0 or 0 <= usage < error else error
        if self.named:
            stats = data.find(b"stats", pos)
            if stats >= 0 and (hit < 0 or stats < hit):
                hit = stats
        return hit

    def _frame(self, frame: bytes) -> Frame:
        if not self.named and frame.startswith(b"data: ") and frame.find(b"\n") == len(frame) - 2:
            kind = read_openai_frame(frame[6:-2], self, self.lazy)  # one line: the usual shape
        else:
            event, payload = parse_frame(frame)
            if payload is None:
                return Frame.OTHER
            kind = read_frame(self.kind, event, payload, self, self.lazy)
        if kind is Frame.OUTPUT:
            self.ex.tokens_streamed += 1
            if self.ex.ttft_ms is None:
                self._first_token()
        return kind

    def _first_token(self) -> None:
        """Time to first token is now; from here on only marked frames are parsed (unless
        output text is collected)."""
        self.ex.ttft_ms = (time.perf_counter() - self.ex.started) * 1000.0
        self.lazy = not self.text_limit

    def _feed_crlf(self, chunk: bytes) -> bytes:
        """Frame by frame, for streams that end lines with `\\r\\n`."""
        if self.crlf is None:
            self.crlf = FrameSplitter(self.limit)
            self.crlf.tail, self.tail = self.tail, b""
        carried = bool(self.crlf.tail)
        frames = self.crlf.feed(chunk)
        kept = [f for f in frames if not (self._frame(f) is Frame.USAGE_ONLY and self.strip)]
        if not self.strip or (len(kept) == len(frames) and not carried and not self.crlf.tail):
            return chunk
        return b"".join(kept)
