"""What an inference answer says about itself: token usage, an error, and the output text.

One reader per endpoint family reads whole JSON bodies and stream frames (which
`stream_scan.py` picks out of the stream; `FrameSplitter` cuts them for its frame-by-frame
path, carrying a frame split across chunks until its end arrives). Each kind reports usage in
its own place: OpenAI
`usage.prompt_tokens/completion_tokens` (a last chunk with `choices: []` in streams),
Responses and Anthropic `usage.input_tokens/output_tokens` (`response.completed`;
`message_start` + `message_delta`), LM Studio's native chat
`stats.input_tokens/total_output_tokens` (`chat.end`).
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

import orjson

USAGE_KEYS = {
    "chat": ("usage", "prompt_tokens", "completion_tokens"),
    "completions": ("usage", "prompt_tokens", "completion_tokens"),
    "embeddings": ("usage", "prompt_tokens", "completion_tokens"),
    "responses": ("usage", "input_tokens", "output_tokens"),
    "messages": ("usage", "input_tokens", "output_tokens"),
    "native_chat": ("stats", "input_tokens", "total_output_tokens"),
}
# Where the usage tap leaves the `stats` object of an LM Studio answer (`observe/lms_telemetry.py`)
STATS_ATTRIBUTE = "lmstudio.stats"
_FINAL_RESPONSE = ("response.completed", "response.incomplete", "response.failed")
_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


class FrameSplitter:
    __slots__ = ("limit", "tail")

    def __init__(self, limit: int = 1 << 20) -> None:
        self.limit = limit
        self.tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The frames `chunk` completes, each with its blank-line terminator."""
        data = self.tail + chunk if self.tail else chunk
        if data.find(b"\r") < 0:  # the common framing, split in C
            *whole, self.tail = data.split(b"\n\n")
            frames = [frame + b"\n\n" for frame in whole]
            if len(self.tail) > self.limit:
                frames.append(self.tail)
                self.tail = b""
            return frames
        frames = []
        start = 0
        for match in _END.finditer(data):
            frames.append(data[start : match.end()])
            start = match.end()
        self.tail = data[start:]
        if len(self.tail) > self.limit:
            frames.append(self.tail)
            self.tail = b""
        return frames

    def rest(self) -> bytes:
        """What is left when the stream ends (a last frame without its blank line)."""
        tail, self.tail = self.tail, b""
        return tail


def parse_frame(frame: bytes) -> tuple[str | None, bytes | None]:
    """The frame's `event:` name and its `data:` payload (lines joined), either may be None."""
    if frame.startswith(b"data: ") and frame.find(b"\n") == len(frame) - 2:
        return None, frame[6:-2]  # the OpenAI shape: one data line, then the blank line
    event: str | None = None
    data: list[bytes] = []
    for line in frame.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode("utf-8", "replace")
    return event, (b"\n".join(data) if data else None)


class Frame(Enum):
    OUTPUT = "output"  # carries generated tokens
    USAGE_ONLY = "usage_only"  # the OpenAI usage chunk (`choices: []`), nothing else
    OTHER = "other"


class Reading:
    """What an answer said of itself so far. The defaults are the class's own: a reading is
    made per request, and one that finds nothing (or only usage) writes little."""

    tokens_in: int | None = None
    tokens_out: int | None = None
    error: str | None = None
    text_limit = 0  # collect up to this many characters of output (0: none)
    text: list[str]  # made by `collect_text`, only when output text is wanted
    text_chars = 0
    stats: dict[str, Any] | None = None  # LM Studio's own `stats` (REST v1 chat, v0)

    def collect_text(self, limit: int) -> None:
        self.text_limit = limit
        self.text = []

    def usage(self, container: Any, in_key: str, out_key: str) -> None:
        if not isinstance(container, dict):
            return
        tokens_in, tokens_out = container.get(in_key), container.get(out_key)
        if isinstance(tokens_in, int):
            self.tokens_in = tokens_in
        if isinstance(tokens_out, int):
            self.tokens_out = tokens_out

    def failed(self, error: Any) -> None:
        if isinstance(error, dict):
            error = error.get("message", error)
        if error and self.error is None:
            self.error = str(error)[:300]

    def add_text(self, piece: Any) -> None:
        if isinstance(piece, str) and piece and self.text_chars < self.text_limit:
            self.text.append(piece)
            self.text_chars += len(piece)


def _dig(obj: Any, *path: str | int) -> Any:
    for step in path:
        if isinstance(step, int):
            obj = obj[step] if isinstance(obj, list) and len(obj) > step else None
        else:
            obj = obj.get(step) if isinstance(obj, dict) else None
    return obj


def read_body(kind: str, obj: Any, reading: Reading) -> None:
    """A whole (non-streamed) answer."""
    if not isinstance(obj, dict):
        return
    if obj.get("error"):
        reading.failed(obj["error"])
    container, in_key, out_key = USAGE_KEYS[kind]
    reading.usage(obj.get(container), in_key, out_key)
    if isinstance(stats := obj.get("stats"), dict) and stats:
        reading.stats = stats
    if kind == "embeddings" and reading.tokens_in is not None:
        reading.tokens_out = 0
    if reading.text_limit:
        for piece in _body_text(kind, obj):
            reading.add_text(piece)


def _body_text(kind: str, obj: dict[str, Any]) -> list[Any]:
    if kind == "chat":
        return [_dig(obj, "choices", 0, "message", "content")]
    if kind == "completions":
        return [_dig(obj, "choices", 0, "text")]
    if kind == "messages":
        return [part.get("text") for part in obj.get("content") or () if isinstance(part, dict)]
    items = [i for i in obj.get("output") or () if isinstance(i, dict) and i.get("type")]
    if kind == "native_chat":
        return [i.get("content") for i in items if i["type"] == "message"]
    if kind == "responses":
        parts = [p for i in items if i["type"] == "message" for p in i.get("content") or ()]
        return [p.get("text") for p in parts if isinstance(p, dict)]
    return []


def read_frame(kind: str, event: str | None, data: bytes, reading: Reading, lazy: bool) -> Frame:
    """One stream frame. `lazy`: only usage and errors still matter, skip parsing the rest."""
    if event is None or event == "message":
        return read_openai_frame(data, reading, lazy)
    output = event.endswith(".delta") or event == "content_block_delta"
    if output and lazy:
        return Frame.OUTPUT
    if not output and event not in _INTERESTING:
        return Frame.OTHER
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Frame.OTHER
    if output:
        reading.add_text(_delta_text(event, obj))
        return Frame.OUTPUT
    if event == "error":
        reading.failed(obj.get("error", obj.get("message")) if isinstance(obj, dict) else obj)
    elif event in _FINAL_RESPONSE:
        reading.usage(_dig(obj, "response", "usage"), "input_tokens", "output_tokens")
        if event == "response.failed":
            reading.failed(_dig(obj, "response", "error"))
    elif event == "message_start":
        reading.usage(_dig(obj, "message", "usage"), "input_tokens", "output_tokens")
    elif event == "message_delta":
        reading.usage(_dig(obj, "usage"), "input_tokens", "output_tokens")
    elif event == "chat.end":
        stats = _dig(obj, "result", "stats")
        reading.usage(stats, "input_tokens", "total_output_tokens")
        if isinstance(stats, dict) and stats:
            reading.stats = stats
    return Frame.OTHER


_INTERESTING = frozenset({"error", "message_start", "message_delta", "chat.end", *_FINAL_RESPONSE})


def _delta_text(event: str, obj: Any) -> Any:
    if event == "response.output_text.delta":
        return _dig(obj, "delta")
    if event == "content_block_delta":
        return _dig(obj, "delta", "text")
    if event == "message.delta":
        return _dig(obj, "content")
    return None


_PRODUCED = (b'"content":"', b'"reasoning":"', b'"text":"')


def says_output(data: bytes) -> bool:
    """A non-empty token field in compact JSON: an output frame, known without parsing it.
    (False proves nothing: the caller parses then.)"""
    for key in _PRODUCED:
        at = data.find(key)
        while at >= 0:  # a stream's first frame often says `"content":""`; the next, a token
            at += len(key)
            if data[at : at + 1] != b'"':
                return True
            at = data.find(key, at)
    return data.find(b'"tool_calls":[{') >= 0


def read_openai_frame(data: bytes, reading: Reading, lazy: bool) -> Frame:
    """One OpenAI stream frame's `data:` payload (see `read_frame`)."""
    if data == b"[DONE]":
        return Frame.OTHER
    if data.find(b'"usage"') < 0 and data.find(b'"error"') < 0:
        if lazy or (not reading.text_limit and says_output(data)):
            return Frame.OUTPUT
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return Frame.OTHER
    if not isinstance(obj, dict):
        return Frame.OTHER
    if obj.get("error"):
        reading.failed(obj["error"])
        return Frame.OTHER
    choices = obj.get("choices")
    usage = obj.get("usage")
    if usage:
        reading.usage(usage, "prompt_tokens", "completion_tokens")
        if choices == []:
            return Frame.USAGE_ONLY
    first = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(first, dict):
        return Frame.OTHER
    delta = first.get("delta")
    if isinstance(delta, dict):
        piece = delta.get("content")
        produced = piece or delta.get("reasoning_content") or delta.get("reasoning")
        produced = produced or delta.get("tool_calls")
    else:
        piece = produced = first.get("text")
    reading.add_text(piece)
    return Frame.OUTPUT if produced else Frame.OTHER
