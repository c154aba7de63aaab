"""An answer started early: its start goes through the taps that ran before it, and a refusal
is framed as the endpoint's SDK expects an error event."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from lmgate.errors import GatewayError
from lmgate.proxy.early import EarlyStart, error_event
from lmgate.schedule.errors import SchedulerRefusal
from lmgate.schedule.types import Reject

TIMEOUT = SchedulerRefusal(Reject("r1", 503, "queue_timeout", "waited too long", 5.0))


def _frame(raw: bytes) -> tuple[str | None, Any]:
    assert raw.endswith(b"\n\n") and raw.count(b"\n\n") == 1
    event = None
    data: Any = None
    for line in raw.strip().split(b"\n"):
        name, _, value = line.partition(b": ")
        if name == b"event":
            event = value.decode()
        elif name == b"data":
            data = orjson.loads(value)
    return event, data


@pytest.mark.parametrize("endpoint", ["chat", "completions", None])
def test_openai_compatible_routes_get_an_error_frame(endpoint: str | None) -> None:
    event, data = _frame(error_event(endpoint, TIMEOUT))
    assert event is None
    assert data == {
        "error": {"message": "waited too long", "type": "server_error", "code": "queue_timeout"}
    }


def test_messages_get_anthropics_error_event() -> None:
    event, data = _frame(error_event("messages", TIMEOUT))
    assert event == "error"
    assert data == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "waited too long"},
    }
    full = SchedulerRefusal(Reject("r2", 429, "queue_full", "queue full", 1.0))
    assert _frame(error_event("messages", full))[1]["error"]["type"] == "rate_limit_error"
    assert _frame(error_event("messages", GatewayError("x")))[1]["error"]["type"] == "api_error"


def test_responses_get_their_error_event_which_the_openai_sdk_raises_on() -> None:
    event, data = _frame(error_event("responses", TIMEOUT, first=True))
    assert event == "error"
    assert data["type"] == "error" and data["sequence_number"] == 0
    assert data["code"] == "queue_timeout" and data["message"] == "waited too long"
    assert data["error"]["code"] == "queue_timeout"  # the SDK raises on an `error` key
    assert "sequence_number" not in _frame(error_event("responses", TIMEOUT))[1]


def test_native_chat_gets_lm_studios_error_event() -> None:
    event, data = _frame(error_event("native_chat", TIMEOUT))
    assert event == "error"
    assert data["type"] == "error" and data["error"]["code"] == "queue_timeout"


class _Tap:
    def __init__(self, name: bytes) -> None:
        self.name = name
        self.starts: list[int] = []

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        self.starts.append(status)
        return [*headers, (b"x-tap", self.name)]

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def end(self) -> bytes:
        return b""


def test_the_start_passes_the_taps_so_far_and_only_them() -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> EarlyStart:
        taps: list[Any] = [_Tap(b"rate")]
        early = EarlyStart(send, taps)
        assert not early.pending
        await early.start([(b"x-queue-position", b"4")])
        taps.append(_Tap(b"usage"))  # a hook after the waiting one
        await early.write(b": queued position=4 eta_ms=10\n\n")
        return early

    early = asyncio.run(run())
    assert early.started and early.pending and early.tapped == 1
    start, body = sent
    assert start["status"] == 200
    assert start["headers"] == [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        (b"x-queue-position", b"4"),
        (b"x-tap", b"rate"),
    ]
    assert body == {
        "type": "http.response.body",
        "body": b": queued position=4 eta_ms=10\n\n",
        "more_body": True,
    }
    rate, usage = early.taps
    assert isinstance(rate, _Tap) and rate.starts == [200]
    assert isinstance(usage, _Tap) and usage.starts == []
