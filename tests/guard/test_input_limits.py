"""Body size and read deadline (InputLimits), and the JSON depth guard, in process."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmgate.asgi import Message
from lmgate.errors import BadRequest
from lmgate.exchange import Exchange
from lmgate.guard.limits import InputLimits, JsonDepthLimit, json_depth
from lmgate.proxy.hooks import ProxyRequest


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    def json(self) -> Any:
        return orjson.loads(self.messages[1]["body"])


async def _run(
    chunks: list[bytes], *, headers: list[tuple[bytes, bytes]], delay: float = 0.0
) -> tuple[Recorder, list[bytes]]:
    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        seen.append(message["body"])
        assert message["more_body"] is False
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    pending = list(chunks)

    async def receive() -> Message:
        await asyncio.sleep(delay)
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}
    scope["lmgate.exchange"] = Exchange("r", "POST", "/v1/chat/completions", None)
    out = Recorder()
    await InputLimits(app, max_body_bytes=10, body_timeout=0.2)(scope, receive, out)
    return out, seen


async def test_body_is_handed_on_whole() -> None:
    out, seen = await _run([b"12345", b"6789"], headers=[(b"transfer-encoding", b"chunked")])
    assert out.status == 200 and seen == [b"123456789"]


async def test_oversized_body_is_413_even_without_content_length() -> None:
    out, seen = await _run([b"123456", b"789012"], headers=[(b"transfer-encoding", b"chunked")])
    assert out.status == 413 and not seen
    assert out.json()["error"]["code"] == "request_too_large"


async def test_declared_length_over_the_limit_is_refused_unread() -> None:
    out, seen = await _run([b"x"], headers=[(b"content-length", b"11")])
    assert out.status == 413 and not seen


async def test_slow_body_is_408() -> None:
    out, seen = await _run(
        [b"1", b"2", b"3", b"4"], headers=[(b"content-length", b"4")], delay=0.08
    )
    assert out.status == 408 and not seen
    assert out.json()["error"]["code"] == "request_timeout"


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@given(st.integers(min_value=0, max_value=300))
def test_json_depth_counts_nesting(depth: int) -> None:
    assert json_depth(_nested(depth), 1000) == depth


def test_json_depth_stops_early_and_sees_siblings() -> None:
    assert json_depth(_nested(10_000), 64) == 65
    assert json_depth({"a": 1, "b": [1, 2, {"c": [[]]}]}, 64) == 5
    assert json_depth(["x"] * 100_000, 64) == 1


def _request(body: dict[str, Any]) -> ProxyRequest:
    raw = orjson.dumps(body)
    return ProxyRequest({}, "POST", "/v1/chat/completions", "chat", orjson.loads(raw), raw=raw)


async def test_depth_hook_refuses_deep_bodies() -> None:
    hook = JsonDepthLimit(8)
    ex = Exchange("r", "POST", "/v1/chat/completions", None)
    assert await hook.before_forward(ex, _request({"messages": _nested(7)})) is None
    # many brackets, side by side or inside strings, but shallow: walked, and let through
    wide = {"messages": [{"content": "[[[{{{"} for _ in range(20)]}
    assert await hook.before_forward(ex, _request(wide)) is None
    with pytest.raises(BadRequest) as refused:
        await hook.before_forward(ex, _request({"messages": _nested(8)}))
    assert refused.value.code == "json_too_deep"
