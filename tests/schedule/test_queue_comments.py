"""A streaming request that waits in the queue is told where it stands, in the stream itself:
the answer starts after a second, `: queued position=N eta_ms=M` comments follow, then the
upstream's events on the same answer, or a refusal as an error event the SDKs raise on.
Real gateway and emulator, real clients (openai and anthropic SDKs, httpx, raw sockets)."""

from __future__ import annotations

import asyncio
import itertools
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import psutil
import pytest

from lmgate.schedule.notify import comment, wait_announcing, wants_comments
from lmgate.schedule.types import Admit, QueueInfo, Reject
from tests.servers import (
    ADMIN_KEY,
    ServerProcess,
    admin_headers,
    start_emulator,
    start_gateway,
    upstream_requests,
)

QWEN = "qwen/qwen3-4b"
KEY = "sk-queue-comments-0123456789"
BASE = {
    "LMGATE_ADMIN_KEY": ADMIN_KEY,
    "LMGATE_API_KEYS": KEY,
    "LMGATE_SYNC_INTERVAL": "0.3",
    "LMGATE_CORS_ORIGINS": "http://app.lan",
}
AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGES: Any = [{"role": "user", "content": "hello"}]
COMMENT = re.compile(rb"^: queued position=(\d+) eta_ms=(\d+)$")
SLOW = {"x-emulator-token-delay": "0.25"}
RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # SO_LINGER on, 0 s: close() sends RST


def _stats(emu: ServerProcess) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(emu.url + "/__emulator/generations").json()
    return stats


def _queue(gw: ServerProcess) -> dict[str, Any]:
    queue: dict[str, Any] = httpx.get(gw.url + "/debug/queue", headers=admin_headers()).json()
    return queue


def _until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _completed(gw: ServerProcess, request_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        listing = httpx.get(gw.url + "/debug/requests", headers=admin_headers()).json()
        return next((r for r in listing["completed"] if r["requestId"] == request_id), None)

    found: dict[str, Any] = _until(find)
    return found


@pytest.fixture
def servers(tmp_root: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """`start(gateway_env)`: an emulator whose models answer one request at a time, and a
    gateway in front of it."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None) -> tuple[ServerProcess, ServerProcess]:
        emu = start_emulator(tmp_root, "--parallel", "1", name=f"emu-{request.node.name[:40]}")
        started.append(emu)
        gw = start_gateway(tmp_root, emu.url, env={**BASE, **(env or {})})
        started.append(gw)
        _until(lambda: any(m["model"] == QWEN for m in _queue(gw)["models"]))
        return emu, gw

    yield start
    for server in reversed(started):
        server.stop()


def _busy(gw: ServerProcess, emu: ServerProcess, tokens: int = 12) -> threading.Thread:
    """A stream that holds the model's one slot for about `tokens` times 0.25 s."""
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=60)

    def run() -> None:
        stream = client.chat.completions.create(
            model=QWEN, messages=MESSAGES, stream=True, max_tokens=tokens, extra_headers=SLOW
        )
        for _ in stream:
            pass

    thread = threading.Thread(target=run)
    thread.start()
    _until(lambda: _stats(emu)["generating"].get(QWEN) == 1)
    return thread


def _waiting(gw: ServerProcess, count: int) -> None:
    _until(lambda: len(_queue(gw)["waiting"]) >= count)


class RawStream:
    """A streamed chat answer read line by line with httpx, each line with its arrival time."""

    def __init__(
        self,
        gw: ServerProcess,
        headers: dict[str, str] | None = None,
        path: str = "/v1/chat/completions",
        **body: Any,
    ):
        self.gw = gw
        self.headers = {**AUTH, **(headers or {})}
        self.body = {"model": QWEN, "stream": True, **body}
        if path.endswith("/chat/completions") and "messages" not in body:
            self.body["messages"] = MESSAGES
        self.path = path
        self.lines: list[tuple[float, bytes]] = []
        self.status = 0
        self.response_headers: httpx.Headers | None = None
        self.started = time.monotonic()
        self.headers_at = 0.0
        self.thread = threading.Thread(target=self._run)

    def start(self) -> RawStream:
        self.thread.start()
        return self

    def _run(self) -> None:
        with (
            httpx.Client(base_url=self.gw.url, timeout=60) as http,
            http.stream("POST", self.path, json=self.body, headers=self.headers) as resp,
        ):
            self.headers_at = time.monotonic() - self.started
            self.status = resp.status_code
            self.response_headers = resp.headers
            for line in resp.iter_lines():
                self.lines.append((time.monotonic() - self.started, line.encode()))

    def join(self) -> RawStream:
        self.thread.join(60)
        assert not self.thread.is_alive()
        return self

    def comments(self) -> list[tuple[float, int, int]]:
        found = []
        for at, line in self.lines:
            match = COMMENT.match(line)
            if match:
                found.append((at, int(match[1]), int(match[2])))
        return found

    def data(self) -> list[bytes]:
        return [line[6:] for _, line in self.lines if line.startswith(b"data: ")]


# -- end to end ----------------------------------------------------------------------------------


def test_a_waiting_stream_gets_comments_then_its_whole_answer(servers: Any) -> None:
    emu, gw = servers()
    busy = _busy(gw, emu)
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    box: dict[str, Any] = {}

    def ask() -> None:
        raw = sdk.chat.completions.with_raw_response.create(
            model=QWEN, messages=MESSAGES, stream=True, max_tokens=10, extra_headers=SLOW
        )
        text, finish = "", None
        for chunk in raw.parse():
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
        box.update(headers=raw.headers, text=text, finish=finish)

    made = httpx.post(
        gw.url + "/admin/keys", json={"name": "paced", "rpm": 100}, headers=admin_headers()
    )
    paced = made.json()["key"]
    first = threading.Thread(target=ask)
    first.start()
    _waiting(gw, 1)
    second = RawStream(
        gw,
        headers={
            "Authorization": f"Bearer {paced}",
            "X-Request-ID": "queued-raw-1",
            "Origin": "http://app.lan",
        },
        max_tokens=4,
    ).start()
    _waiting(gw, 2)
    busy.join(60)
    first.join(60)
    second.join()

    # The SDK skipped the comments: the whole answer, normally.
    assert box["finish"] == "length" and len(box["text"].split()) == 10
    assert box["headers"]["content-type"].startswith("text/event-stream")
    assert int(box["headers"]["x-queue-position"]) == 1
    assert "x-queue-wait-ms" not in box["headers"]  # told in the stream, not at the end

    # The raw client saw where it stood, before any data, and its place move up.
    assert second.status == 200
    headers = second.response_headers
    assert headers is not None
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    assert headers["x-queue-position"] == "2"
    assert headers["x-request-id"] == "queued-raw-1"
    assert headers["access-control-allow-origin"] == "http://app.lan"
    assert headers["x-ratelimit-limit-requests"] == "100"
    assert int(headers["x-ratelimit-remaining-requests"]) == 99
    comments = second.comments()
    assert len(comments) >= 3
    first_data = next(at for at, line in second.lines if line.startswith(b"data: "))
    assert all(at < first_data for at, _, _ in comments)
    assert 0.7 < comments[0][0] < 4.0  # after about a second of waiting
    positions = [p for _, p, _ in comments]
    assert positions[0] == 2 and positions[-1] == 1
    assert positions == sorted(positions, reverse=True)
    assert all(eta >= 0 for _, _, eta in comments)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(comments)]
    assert max(gaps) < 5.0  # a heartbeat every ~2 s, with a margin for a loaded machine
    chunks = [orjson.loads(d) for d in second.data() if d != b"[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len(text.split()) == 4
    assert second.data()[-1] == b"[DONE]"
    record = _completed(gw, "queued-raw-1")
    assert record["status"] == 200 and record["error"] is None
    assert record["tokensOut"] == 4
    assert _stats(emu)["peak_generating"][QWEN] == 1


@pytest.mark.parametrize("how", ["setting", "header"])
def test_opting_out_sends_nothing_before_the_answer(servers: Any, how: str) -> None:
    env = {"LMGATE_QUEUE_SSE_COMMENTS": "false"} if how == "setting" else {}
    emu, gw = servers(env)
    busy = _busy(gw, emu, tokens=10)
    opt_out = {"X-Lmgate-Queue-Comments": "off"} if how == "header" else {}
    waiting = RawStream(gw, headers=opt_out, max_tokens=3).start()
    _waiting(gw, 1)
    busy.join(60)
    waiting.join()
    assert waiting.status == 200
    assert waiting.comments() == []
    assert not any(line.startswith(b":") for _, line in waiting.lines)
    headers = waiting.response_headers
    assert headers is not None
    assert headers["x-queue-position"] == "1"
    assert int(headers["x-queue-wait-ms"]) >= 1000  # headers came once it was admitted
    assert waiting.headers_at >= 1.0
    assert waiting.data()[-1] == b"[DONE]"


def test_a_queue_timeout_after_the_early_start_is_an_error_the_sdk_raises(servers: Any) -> None:
    emu, gw = servers({"LMGATE_QUEUE_TIMEOUT": "2.5"})
    busy = _busy(gw, emu, tokens=30)
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    marked: Any = [{"role": "user", "content": "TIMED-OUT-MARKER"}]
    raw = RawStream(
        gw, headers={"X-Request-ID": "timed-out-raw"}, max_tokens=3, messages=marked
    ).start()
    started = time.monotonic()
    stream = sdk.chat.completions.create(
        model=QWEN,
        messages=marked,
        stream=True,
        max_tokens=3,
        extra_headers={"X-Request-ID": "timed-out-sdk"},
    )
    with pytest.raises(openai.APIError) as caught:
        for _ in stream:
            pass
    assert 2.0 < time.monotonic() - started < 15.0
    assert "queue" in caught.value.message.lower()
    body: Any = caught.value.body
    assert body["code"] == "queue_timeout" and body["type"] == "server_error"
    raw.join()
    assert raw.status == 200 and raw.comments()
    error = orjson.loads(raw.data()[-1])["error"]
    assert error["code"] == "queue_timeout" and error["message"]
    for request_id in ("timed-out-sdk", "timed-out-raw"):
        record = _completed(gw, request_id)
        assert record["status"] == 503
        assert "sent in the event stream" in record["error"]
    busy.join(60)
    with httpx.Client(base_url=emu.url) as up:
        assert not any("TIMED-OUT-MARKER" in str(r["body"]) for r in upstream_requests(up))
    assert _queue(gw)["waiting"] == []


def test_an_upstream_refusal_after_the_early_start_is_an_error_event(servers: Any) -> None:
    emu, gw = servers()
    busy = _busy(gw, emu, tokens=8)
    failing = RawStream(
        gw, headers={"x-emulator-fail": "500", "X-Request-ID": "refused-upstream"}, max_tokens=3
    ).start()
    _waiting(gw, 1)
    busy.join(60)
    failing.join()
    assert failing.status == 200 and failing.comments()
    frames = failing.data()
    assert len(frames) == 1
    error = orjson.loads(frames[0])["error"]
    assert error["message"] and error["type"] == "upstream_error"
    record = _completed(gw, "refused-upstream")
    assert record["status"] == 500  # the upstream's own status
    assert "sent in the event stream" in record["error"]


def test_anthropic_sdk_streams_after_waiting_and_raises_on_a_refusal(servers: Any) -> None:
    emu, gw = servers({"LMGATE_QUEUE_TIMEOUT": "30"})
    claude = anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0, timeout=60)
    busy = _busy(gw, emu, tokens=10)
    started = time.monotonic()
    with claude.messages.stream(
        model=QWEN, max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert time.monotonic() - started > 1.5  # it did wait
    assert len(text.split()) == 5 and final.stop_reason == "max_tokens"
    busy.join(60)

    busy = _busy(gw, emu, tokens=10)
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        claude.messages.stream(
            model=QWEN,
            max_tokens=5,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-emulator-fail": "500"},
        ) as failing,
    ):
        for _ in failing:
            pass
    body: Any = caught.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error" and body["error"]["message"]
    busy.join(60)


def test_responses_stream_after_waiting_and_raise_on_a_refusal(servers: Any) -> None:
    emu, gw = servers()
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    busy = _busy(gw, emu, tokens=8)
    events = list(sdk.responses.create(model=QWEN, input="hi", stream=True, max_output_tokens=4))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.incomplete"  # max_output_tokens reached
    assert len([e for e in events if e.type == "response.output_text.delta"]) == 4
    busy.join(60)

    busy = _busy(gw, emu, tokens=8)
    stream = sdk.responses.create(
        model=QWEN,
        input="hi",
        stream=True,
        max_output_tokens=4,
        extra_headers={"x-emulator-fail": "500"},
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass
    busy.join(60)


ENDPOINTS = [
    ("/v1/completions", {"prompt": "once upon", "max_tokens": 4}, b"data: "),
    ("/api/v0/chat/completions", {"messages": MESSAGES, "max_tokens": 4}, b"data: "),
    ("/chat/completions", {"messages": MESSAGES, "max_tokens": 4}, b"data: "),
    ("/api/v1/chat", {"input": "hi", "max_output_tokens": 4}, b"event: chat.start"),
    ("/v1/messages", {"messages": MESSAGES, "max_tokens": 4}, b"event: message_start"),
]


def test_every_streaming_endpoint_gets_comments_before_its_own_events(servers: Any) -> None:
    emu, gw = servers()
    for path, body, first_event in ENDPOINTS:
        busy = _busy(gw, emu, tokens=8)
        stream = RawStream(gw, path=path, **body).start()
        _waiting(gw, 1)
        busy.join(60)
        stream.join()
        assert stream.status == 200, path
        lines = [line for _, line in stream.lines if line]
        assert COMMENT.match(lines[0]), (path, lines[:2])
        events = [i for i, line in enumerate(lines) if not line.startswith(b":")]
        assert lines[events[0]].startswith(first_event), (path, lines[events[0]])
        assert all(COMMENT.match(line) for line in lines[: events[0]])
        assert not any(b'"error"' in line for line in lines), path


def test_a_stream_flag_on_embeddings_starts_nothing_early(servers: Any) -> None:
    _, gw = servers({"LMGATE_MODEL_SLOTS": "1"})  # embedding models report no `parallel`
    embed = "text-embedding-nomic-embed-text-v1.5"
    body = {"model": embed, "input": "hello", "stream": True}
    with httpx.Client(base_url=gw.url, timeout=60) as http:
        slow = {**AUTH, "x-emulator-delay": "3"}
        holder = threading.Thread(
            target=http.post, args=("/v1/embeddings",), kwargs={"json": body, "headers": slow}
        )
        holder.start()
        _until(lambda: any(m["model"] == embed and m["inFlight"] for m in _queue(gw)["models"]))
        answer = http.post("/v1/embeddings", json=body, headers=AUTH)
        holder.join(60)
    assert answer.status_code == 200
    assert answer.json()["data"][0]["embedding"]
    assert answer.headers["x-queue-position"] == "1"
    assert int(answer.headers["x-queue-wait-ms"]) >= 1000


def _open_stream(port: int, marker: str) -> socket.socket:
    body = orjson.dumps(
        {"model": QWEN, "stream": True, "messages": [{"role": "user", "content": marker}]}
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    return sock


def _read_until(sock: socket.socket, needle: bytes) -> bytes:
    seen = b""
    while needle not in seen:
        data = sock.recv(65536)
        assert data, f"closed before {needle!r}: {seen!r}"
        seen += data
    return seen


def test_clients_leaving_after_the_early_start_leave_the_queue(servers: Any) -> None:
    emu, gw = servers()
    assert gw.proc is not None
    server = psutil.Process(gw.proc.pid)
    busy = _busy(gw, emu, tokens=40)
    rss_before = server.memory_info().rss
    socks = [_open_stream(gw.port, f"GONE-{i}") for i in range(40)]
    _waiting(gw, 40)
    for sock in socks:
        head = _read_until(sock, b": queued position=")
        assert head.startswith(b"HTTP/1.1 200 ")
    left_at = time.monotonic()
    for i, sock in enumerate(socks):
        if i % 2:  # closed politely, or reset
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        sock.close()
    _until(lambda: _queue(gw)["waiting"] == [], timeout=10.0)
    assert time.monotonic() - left_at < 10.0
    assert server.memory_info().rss - rss_before < 40 * 1024 * 1024
    # Another client is served meanwhile, by the next free slot, with nothing queued before it.
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=60)
    busy.join(60)
    done = sdk.chat.completions.create(model=QWEN, messages=MESSAGES, max_tokens=2)
    assert done.choices[0].finish_reason == "length"
    with httpx.Client(base_url=emu.url) as up:
        sent = [str(r["body"]) for r in upstream_requests(up)]
    assert not any("GONE-" in s for s in sent)
    listing = httpx.get(gw.url + "/debug/requests?limit=100", headers=admin_headers()).json()
    gone = [r for r in listing["completed"] if r["error"] == "client disconnected"]
    assert len(gone) == 40 and all(r["status"] == 499 for r in gone)


# -- the comment writer, in-process -------------------------------------------------------------


class _Answer:
    def __init__(self) -> None:
        self.started = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.writes: list[bytes] = []

    async def start(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        self.headers = headers

    async def write(self, chunk: bytes) -> None:
        self.writes.append(chunk)


def test_a_verdict_within_the_first_second_starts_nothing() -> None:
    async def run() -> tuple[Admit | Reject, _Answer]:
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[Admit | Reject] = loop.create_future()
        loop.call_later(0.05, verdict.set_result, Admit("r1", "upstream", QWEN, 0.05, 1))
        answer = _Answer()
        got = await wait_announcing(verdict, answer, lambda: QueueInfo(1, 100), after=0.5)
        return got, answer

    got, answer = asyncio.run(run())
    assert isinstance(got, Admit) and not answer.started and answer.writes == []


def test_comments_follow_the_position_and_stop_at_the_verdict() -> None:
    places = iter([QueueInfo(3, 900), QueueInfo(3, 800), QueueInfo(2, 500), QueueInfo(1, 100)])
    last = QueueInfo(1, 100)
    last_c = comment(last)

    def where() -> QueueInfo:
        return next(places, last)

    async def run() -> _Answer:
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[Admit | Reject] = loop.create_future()
        loop.call_later(2.4, verdict.set_result, Admit("r1", "upstream", QWEN, 2.4, 3))
        answer = _Answer()
        assert isinstance(await wait_announcing(verdict, answer, where, after=0.05), Admit)
        return answer

    answer = asyncio.run(run())
    assert answer.started and answer.headers == [(b"x-queue-position", b"3")]
    # Told at once, then at each change; nothing for an unchanged place within a heartbeat.
    assert answer.writes == [comment(QueueInfo(3, 900)), comment(QueueInfo(2, 500)), last_c]
    told = [COMMENT.match(w.strip()) for w in answer.writes]
    assert [int(m[1]) for m in told if m] == [3, 2, 1]


def test_the_opt_out_header_is_read_case_insensitively() -> None:
    from lmgate.hooks import ProxyRequest

    def request(*headers: tuple[bytes, bytes]) -> ProxyRequest:
        scope = {"headers": list(headers)}
        req = ProxyRequest(scope, "POST", "/v1/chat/completions", "chat", {})
        req.early = _Answer()
        return req

    assert wants_comments(request()) is not None
    assert wants_comments(request((b"x-lmgate-queue-comments", b"on"))) is not None
    for value in (b"off", b"OFF", b" Off ", b"false", b"0", b"no"):
        assert wants_comments(request((b"x-lmgate-queue-comments", value))) is None
    plain = ProxyRequest({"headers": []}, "POST", "/v1/chat/completions", "chat", {})
    assert wants_comments(plain) is None  # not a stream: nothing to start early


def test_an_unchanged_place_is_told_again_every_two_seconds() -> None:
    async def run() -> _Answer:
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[Admit | Reject] = loop.create_future()
        loop.call_later(3.0, verdict.set_result, Reject("r1", 503, "queue_timeout", "late"))
        answer = _Answer()
        got = await wait_announcing(verdict, answer, lambda: QueueInfo(5, 9000), after=0.05)
        assert isinstance(got, Reject)
        return answer

    answer = asyncio.run(run())
    assert answer.writes == [comment(QueueInfo(5, 9000))] * 2  # at the start, and ~2 s later
