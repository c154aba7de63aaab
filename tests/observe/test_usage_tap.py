"""The usage tap on its own: what it reads from each endpoint's answers, and that the bytes
the client gets are the upstream's, minus only the usage chunk lmgate asked for."""

from __future__ import annotations

import itertools
import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from lmgate.exchange import Exchange
from lmgate.hooks import ProxyRequest
from lmgate.observe.answers import FrameSplitter, says_output
from lmgate.observe.usage_tap import UsageHook, UsageTap

SSE = [(b"content-type", b"text/event-stream"), (b"content-length", b"999")]
JSON = [(b"content-type", b"application/json")]


def data(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def named(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **obj}) + b"\n\n"


def chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return data({"id": "c1", "object": "chat.completion.chunk", "choices": [choice]})


USAGE_FRAME = data(
    {"id": "c1", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
)
CHAT_STREAM = [chunk("Hel"), chunk("lo"), chunk("!"), chunk(None, "stop"), USAGE_FRAME]
CHAT_STREAM.append(b"data: [DONE]\n\n")
CHAT_BYTES = b"".join(CHAT_STREAM)


def exchange() -> Exchange:
    return Exchange("r1", "POST", "/v1/chat/completions", "127.0.0.1", streamed=True)


def run(tap: UsageTap, pieces: list[bytes], headers: list[tuple[bytes, bytes]]) -> bytes:
    tap.start(200, headers)
    out = [tap.feed(piece) for piece in pieces]
    return b"".join(out) + tap.end()


def split(blob: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(blob), *(c % (len(blob) + 1) for c in cuts)})
    return [blob[a:b] for a, b in itertools.pairwise(points)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_stripping_removes_exactly_the_usage_chunk_however_the_bytes_arrive(
    cuts: list[int],
) -> None:
    ex = exchange()
    tap = UsageTap(ex, "chat", strip=True, sink=None)
    got = run(tap, split(CHAT_BYTES, cuts), SSE)
    assert got == CHAT_BYTES.replace(USAGE_FRAME, b"")
    assert (ex.tokens_in, ex.tokens_out) == (7, 3)
    assert ex.ttft_ms is not None and ex.tokens_streamed >= 3


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_without_stripping_every_chunk_passes_as_the_same_object(cuts: list[int]) -> None:
    ex = exchange()
    tap = UsageTap(ex, "chat", strip=False, sink=None)
    tap.start(200, SSE)
    for piece in split(CHAT_BYTES, cuts):
        assert tap.feed(piece) is piece
    assert tap.end() == b""
    assert (ex.tokens_in, ex.tokens_out) == (7, 3)


def test_whole_frames_pass_unchanged_even_when_stripping() -> None:
    tap = UsageTap(exchange(), "chat", strip=True, sink=None)
    headers = tap.start(200, SSE)
    assert (b"content-length", b"999") not in headers  # the length changes
    first = CHAT_STREAM[0]
    assert tap.feed(first) is first


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_the_splitter_loses_no_byte(blob: bytes, cuts: list[int]) -> None:
    splitter = FrameSplitter(limit=64)
    frames = [f for piece in split(blob, cuts) for f in splitter.feed(piece)]
    assert b"".join(frames) + splitter.rest() == blob


def test_a_huge_frame_is_handed_on_not_held() -> None:
    tap = UsageTap(exchange(), "chat", strip=True, sink=None)
    tap.start(200, SSE)
    assert tap.scanner is not None
    tap.scanner.limit = 100
    big = b"data: " + b"x" * 500
    assert tap.feed(big) == big


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_crlf_framed_streams_are_stripped_too(cuts: list[int]) -> None:
    blob = CHAT_BYTES.replace(b"\n", b"\r\n")
    ex = exchange()
    got = run(UsageTap(ex, "chat", strip=True, sink=None), split(blob, cuts), SSE)
    assert got == blob.replace(USAGE_FRAME.replace(b"\n", b"\r\n"), b"")
    assert (ex.tokens_in, ex.tokens_out) == (7, 3) and ex.ttft_ms is not None


def test_a_token_that_looks_like_a_marker_is_just_a_token() -> None:
    frames = [chunk("a"), chunk("usage"), chunk("error stats"), chunk(None, "stop"), USAGE_FRAME]
    ex = exchange()
    got = run(UsageTap(ex, "chat", strip=True, sink=None), [b"".join(frames)], SSE)
    assert got == b"".join(frames[:-1]) and ex.tokens_out == 3
    assert ex.tokens_streamed == 4  # every frame but the usage report, as the frames came


def test_a_whole_stream_in_one_chunk_is_read_as_if_it_came_frame_by_frame() -> None:
    crash = data({"error": {"message": "model crashed"}})
    frames = [chunk("a"), chunk("b"), crash, chunk("c"), USAGE_FRAME, b"data: [DONE]\n\n"]
    whole, one_by_one = exchange(), exchange()
    got = run(UsageTap(whole, "chat", strip=True, sink=None), [b"".join(frames)], SSE)
    run(UsageTap(one_by_one, "chat", strip=True, sink=None), frames, SSE)
    assert got == b"".join(frames).replace(USAGE_FRAME, b"")
    for ex in (whole, one_by_one):
        assert (ex.tokens_in, ex.tokens_out, ex.error) == (7, 3, "model crashed")
    assert whole.tokens_streamed == one_by_one.tokens_streamed == 3  # a, b, c


def _read(kind: str, frames: list[bytes]) -> Exchange:
    ex = exchange()
    tap = UsageTap(ex, kind, strip=False, sink=None)
    run(tap, frames, SSE)
    return ex


def test_usage_in_each_streaming_dialect() -> None:
    messages = [
        named("message_start", {"message": {"usage": {"input_tokens": 11, "output_tokens": 0}}}),
        named("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "a"}}),
        named("message_delta", {"delta": {}, "usage": {"output_tokens": 4}}),
        named("message_stop", {}),
    ]
    ex = _read("messages", messages)
    assert (ex.tokens_in, ex.tokens_out, ex.tokens_streamed) == (11, 4, 1)
    responses = [
        named("response.created", {"response": {"usage": None}}),
        named("response.output_text.delta", {"delta": "hi"}),
        named(
            "response.completed", {"response": {"usage": {"input_tokens": 5, "output_tokens": 2}}}
        ),
    ]
    ex = _read("responses", responses)
    assert (ex.tokens_in, ex.tokens_out) == (5, 2) and ex.ttft_ms is not None
    native = [
        named("message.delta", {"content": "x"}),
        named("chat.end", {"result": {"stats": {"input_tokens": 9, "total_output_tokens": 1}}}),
    ]
    assert (_read("native_chat", native).tokens_in, _read("native_chat", native).tokens_out) == (
        9,
        1,
    )


def test_mid_stream_errors_mark_the_exchange() -> None:
    ex = _read("chat", [chunk("a"), data({"error": {"message": "model crashed"}})])
    ex.status = 200  # the answer started well
    ex.finish(10.0)
    assert ex.error == "model crashed" and ex.failed
    ex = _read("messages", [named("error", {"error": {"type": "api_error", "message": "boom"}})])
    assert ex.error == "boom"


def _body(kind: str, obj: Any) -> Exchange:
    ex = exchange()
    ex.streamed = False
    tap = UsageTap(ex, kind, strip=False, sink=None)
    blob = orjson.dumps(obj)
    run(tap, [blob[:10], blob[10:]], JSON)
    return ex


def test_usage_in_each_plain_answer() -> None:
    chat = _body("chat", {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 8}})
    assert (chat.tokens_in, chat.tokens_out, chat.ttft_ms) == (3, 8, None)
    emb = _body("embeddings", {"data": [], "usage": {"prompt_tokens": 0, "total_tokens": 0}})
    assert (emb.tokens_in, emb.tokens_out) == (0, 0)
    msg = _body("messages", {"content": [], "usage": {"input_tokens": 2, "output_tokens": 5}})
    assert (msg.tokens_in, msg.tokens_out) == (2, 5)
    native = _body("native_chat", {"stats": {"input_tokens": 4, "total_output_tokens": 6}})
    assert (native.tokens_in, native.tokens_out) == (4, 6)
    missing = _body("chat", {"choices": []})
    assert (missing.tokens_in, missing.tokens_out) == (None, None)
    quirk = _body("chat", {"error": "Unexpected endpoint or method. (POST /x)"})
    assert quirk.error and quirk.error.startswith("Unexpected endpoint")


async def test_the_hook_asks_for_usage_only_when_the_client_did_not() -> None:
    hook = UsageHook()
    for given_options, strips in [
        (None, True),
        ({"include_usage": False}, True),
        ({"include_usage": True}, False),
        ({"other": 1}, True),
    ]:
        body: dict[str, Any] = {"stream": True, "messages": []}
        if given_options is not None:
            body["stream_options"] = dict(given_options)
        request = ProxyRequest({}, "POST", "/v1/chat/completions", "chat", body)
        tap = await hook.before_forward(exchange(), request)
        assert isinstance(tap, UsageTap) and tap.strip is strips
        assert body["stream_options"]["include_usage"] is True
        assert request.changed is strips
        if given_options and "other" in given_options:
            assert body["stream_options"]["other"] == 1
    plain = ProxyRequest({}, "POST", "/v1/models", None, None)
    assert await hook.before_forward(exchange(), plain) is None
    messages = {"stream": True, "messages": []}
    request = ProxyRequest({}, "POST", "/v1/messages", "messages", messages)
    tap = await hook.before_forward(exchange(), request)
    assert isinstance(tap, UsageTap) and not tap.strip and "stream_options" not in messages
    assert json.dumps(messages) == '{"stream": true, "messages": []}'


def test_the_first_token_is_the_first_frame_that_generates_something() -> None:
    role_only = data({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    spaced = b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'
    reasoning = data({"choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]})
    for first_token in (spaced, reasoning, chunk("hi")):
        ex = exchange()
        tap = UsageTap(ex, "chat", strip=False, sink=None)
        tap.start(200, SSE)
        tap.feed(role_only)
        assert ex.ttft_ms is None and ex.tokens_streamed == 0
        tap.feed(first_token)
        assert ex.ttft_ms is not None and ex.tokens_streamed == 1


def test_output_is_told_from_the_bytes_past_empty_fields() -> None:
    role_only = data({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    completion = data({"choices": [{"index": 0, "text": "a"}]})
    assert not says_output(role_only) and not says_output(role_only * 3)
    assert says_output(role_only + chunk("hi")) and says_output(role_only * 2 + chunk("hi"))
    assert says_output(role_only + completion)  # another field, after an empty one
    assert not says_output(role_only + chunk(None, "stop"))
