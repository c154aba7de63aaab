"""Body size, read deadline, where a body may be sent and the body memory budget (InputLimits),
and the JSON depth guard, in process."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmgate.asgi import Message
from lmgate.errors import BadRequest
from lmgate.exchange import Exchange
from lmgate.guard.budget import BodyBudget
from lmgate.guard.limits import InputLimits, JsonDepthLimit, json_depth
from lmgate.hooks import ProxyRequest


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


# --- which requests may have a body, and the body memory budget ----------------------------


async def _limited(
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    receive: Any,
    budget: BodyBudget,
    *,
    app: Any = None,
    health_public: bool = True,
) -> Recorder:
    async def echo(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": message.get("body", b"")})

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    scope["lmgate.exchange"] = Exchange("r", method, path, None)
    out = Recorder()
    limits = InputLimits(
        app or echo,
        max_body_bytes=100,
        body_timeout=0.2,
        budget=budget,
        health_public=health_public,
    )
    await limits(scope, receive, out)
    return out


def _never_read() -> Any:
    async def receive() -> Message:
        raise AssertionError("the body was read")

    return receive


def _chunks(*chunks: bytes, then: Message | None = None, stall: bool = False) -> Any:
    """`receive` giving these chunks, then `then` (a disconnect), or nothing ever (`stall`)."""
    pending = list(chunks)
    more = then is not None or stall

    async def receive() -> Message:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending) or more}
        if then is not None:
            return then
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    return receive


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("HEAD", "/v1/models"),
        ("OPTIONS", "/v1/chat/completions"),
        ("POST", "/health"),
        ("POST", "/dashboard/app.js"),
        ("PUT", "/dashboard"),
        ("GET", "/health"),
    ],
)
async def test_no_body_where_none_is_taken(method: str, path: str) -> None:
    """Handed on as a request without a body: nothing read, reserved or kept."""
    budget = BodyBudget(1000)
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((list(scope["headers"]), await receive()))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    empty = {"type": "http.request", "body": b"", "more_body": False}
    for framing in ((b"content-length", b"50"), (b"transfer-encoding", b"chunked")):
        headers = [(b"accept", b"*/*"), framing]
        out = await _limited(method, path, headers, _never_read(), budget, app=app)
        assert out.status == 204 and budget.held == 0
        assert seen.pop() == ([(b"accept", b"*/*")], empty)


async def test_no_body_then_only_the_disconnect() -> None:
    """An app that keeps listening (the proxy's disconnect watcher) never gets body bytes."""
    received: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.append(await receive())
        received.append(await receive())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    receive = _chunks(b"a" * 60, b"b" * 60, then={"type": "http.disconnect"})
    headers = [(b"transfer-encoding", b"chunked")]
    await _limited("GET", "/v1/models", headers, receive, BodyBudget(10), app=app)
    assert [m["type"] for m in received] == ["http.request", "http.disconnect"]
    assert received[0]["body"] == b""


async def test_a_protected_health_takes_a_body_like_any_route() -> None:
    budget = BodyBudget(1000)
    headers = [(b"content-length", b"2")]
    out = await _limited("POST", "/health", headers, _chunks(b"{}"), budget, health_public=False)
    assert out.status == 200 and out.messages[1]["body"] == b"{}"


async def test_an_empty_declared_body_is_no_body() -> None:
    for value in (b"0", b"00", b" 0 "):
        out = await _limited(
            "GET", "/health", [(b"content-length", value)], _chunks(b""), BodyBudget(1)
        )
        assert out.status == 200


async def test_declared_length_is_reserved_before_reading_and_given_back() -> None:
    budget = BodyBudget(150)
    held_while_app_ran: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        held_while_app_ran.append(budget.held)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    headers = [(b"content-length", b"80")]
    out = await _limited("POST", "/v1/x", headers, _chunks(b"a" * 80), budget, app=app)
    assert out.status == 200 and held_while_app_ran == [80] and budget.held == 0


async def test_over_the_budget_is_503_with_retry_after_unread() -> None:
    budget = BodyBudget(150)
    budget.held = 100  # other requests' bodies
    out = await _limited("POST", "/v1/x", [(b"content-length", b"60")], _never_read(), budget)
    assert out.status == 503
    headers = dict(out.messages[0]["headers"])
    assert headers[b"retry-after"] == b"1" and headers[b"connection"] == b"close"
    error = out.json()["error"]
    assert error["code"] == "server_busy" and error["type"] == "server_error"
    assert budget.held == 100


async def test_a_body_larger_than_the_whole_budget_is_413() -> None:
    """It could never fit: not a 503 to retry forever."""
    budget = BodyBudget(50)  # below max_body_bytes (100)
    out = await _limited("POST", "/v1/x", [(b"content-length", b"60")], _never_read(), budget)
    assert out.status == 413 and out.json()["error"]["code"] == "request_too_large"
    chunked = [(b"transfer-encoding", b"chunked")]
    out = await _limited("POST", "/v1/x", chunked, _chunks(b"a" * 30, b"b" * 30), budget)
    assert out.status == 413 and budget.held == 0


async def test_chunked_bodies_reserve_as_they_come() -> None:
    budget = BodyBudget(150)
    budget.held = 100
    headers = [(b"transfer-encoding", b"chunked")]
    out = await _limited("POST", "/v1/x", headers, _chunks(b"a" * 30, b"b" * 30), budget)
    assert out.status == 503  # 30 fitted, 60 did not
    assert budget.held == 100


@pytest.mark.parametrize("ending", ["disconnect", "timeout", "too_large", "app_error", "cancel"])
async def test_every_way_out_gives_the_reservation_back(ending: str) -> None:
    budget = BodyBudget(1000)
    headers = [(b"content-length", b"90")]
    if ending == "too_large":
        headers = [(b"transfer-encoding", b"chunked")]
    receive = {
        "disconnect": _chunks(b"a" * 40, then={"type": "http.disconnect"}),
        "timeout": _chunks(b"a" * 40, stall=True),
        "too_large": _chunks(b"a" * 60, b"b" * 60),
        "app_error": _chunks(b"a" * 90),
        "cancel": _chunks(b"a" * 40, stall=True),
    }[ending]

    async def failing(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise RuntimeError("boom")

    app = failing if ending == "app_error" else None
    run = asyncio.ensure_future(_limited("POST", "/v1/x", headers, receive, budget, app=app))
    await asyncio.sleep(0.05)
    if ending == "cancel":
        assert budget.held == 90
        run.cancel()
    with contextlib.suppress(asyncio.CancelledError, RuntimeError):
        out = await run
        assert out.status == {"disconnect": 200, "timeout": 408, "too_large": 413}[ending]
    assert budget.held == 0
