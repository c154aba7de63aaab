"""A stream held while the upstream wakes is told so in the stream: after a second its answer
starts and `: waking upstream waited_ms=N` comments follow, then the upstream's events, or a
failed wake as the error event the SDKs raise on. Non-streaming requests are unchanged.

Magic packets go only to a UDP listener on 127.0.0.1; the "sleeping machine" is an emulator
started a few seconds after that listener receives the packet, so the wake takes a while.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import psutil
import pytest

from lmgate.hooks import EarlyAnswer
from lmgate.schedule.notify import comment, wait_announcing
from lmgate.schedule.types import Admit, QueueInfo, Reject
from tests.servers import ADMIN_KEY, ServerProcess, admin_headers, free_port, start_gateway
from tests.upstream.test_wake import MAC, UdpListener

QWEN = "qwen/qwen3-4b"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES: Any = [{"role": "user", "content": "hello"}]
WAKING = re.compile(rb"^: waking upstream waited_ms=(\d+)$")
QUEUED = re.compile(rb"^: queued position=(\d+) eta_ms=(\d+)$")
SLOW = {"x-emulator-token-delay": "0.25"}
WAKE_DELAY_S = 3.0  # the sleeping machine takes this long (plus its start) to answer


def wake_env(listener: UdpListener, **extra: str) -> dict[str, str]:
    return {
        "LMGATE_ADMIN_KEY": ADMIN_KEY,
        "LMGATE_WAKE_MAC": MAC,
        "LMGATE_WAKE_BROADCAST": f"127.0.0.1:{listener.port}",
        **extra,
    }


@pytest.fixture
def slow_waker(tmp_path: Path) -> Iterator[Callable[..., tuple[ServerProcess, UdpListener]]]:
    """`make(*emulator_args)`: an upstream that starts `WAKE_DELAY_S` after the magic packet."""
    made: list[tuple[ServerProcess, UdpListener]] = []

    def make(*extra: str) -> tuple[ServerProcess, UdpListener]:
        port = free_port()
        upstream = ServerProcess(
            [sys.executable, "-m", "lmgate.emulator", "--port", str(port), "--no-sdk", *extra],
            port=port,
            ready_path="/lmstudio-greeting",
            log=tmp_path / f"late-emulator-{port}.log",
        )

        def boot() -> None:
            time.sleep(WAKE_DELAY_S)
            upstream.start()

        listener = UdpListener(lambda: threading.Thread(target=boot, daemon=True).start())
        made.append((upstream, listener))
        return upstream, listener

    yield make
    for upstream, listener in made:
        listener.close()
        upstream.stop()


class RawStream:
    """A streamed chat answer read line by line with httpx, each line with its arrival time."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, **body: Any) -> None:
        self.url = url
        self.headers = {**AUTH, **(headers or {})}
        self.body = {"model": QWEN, "messages": MESSAGES, "stream": True, **body}
        self.lines: list[tuple[float, bytes]] = []
        self.status = 0
        self.response_headers: httpx.Headers | None = None
        self.headers_at = 0.0
        self.started = 0.0
        self.thread = threading.Thread(target=self._run)

    def start(self) -> RawStream:
        self.started = time.monotonic()
        self.thread.start()
        return self

    def _run(self) -> None:
        with (
            httpx.Client(base_url=self.url, timeout=90) as http,
            http.stream("POST", "/v1/chat/completions", json=self.body, headers=self.headers) as r,
        ):
            self.headers_at = time.monotonic() - self.started
            self.status = r.status_code
            self.response_headers = r.headers
            for line in r.iter_lines():
                self.lines.append((time.monotonic() - self.started, line.encode()))

    def join(self) -> RawStream:
        self.thread.join(90)
        assert not self.thread.is_alive()
        return self

    def matching(self, pattern: re.Pattern[bytes]) -> list[tuple[float, int]]:
        return [(at, int(m[1])) for at, line in self.lines if (m := pattern.match(line))]

    def data(self) -> list[bytes]:
        return [line[6:] for _, line in self.lines if line.startswith(b"data: ")]

    def first_data_at(self) -> float:
        return next(at for at, line in self.lines if line.startswith(b"data: "))


def _completed(gw: ServerProcess, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        listing = httpx.get(gw.url + "/debug/requests", headers=admin_headers()).json()
        found = next((r for r in listing["completed"] if r["requestId"] == request_id), None)
        if found is not None:
            result: dict[str, Any] = found
            return result
        time.sleep(0.05)
    raise AssertionError(f"{request_id} was not recorded")


def _in_thread(run: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = run()
        except Exception as exc:  # re-raised by the test, which asserts on it
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, box


# -- end to end ----------------------------------------------------------------------------------


def test_streams_hear_the_wake_then_get_their_whole_answer(
    tmp_path: Path, slow_waker: Callable[..., tuple[ServerProcess, UdpListener]]
) -> None:
    upstream, listener = slow_waker("--token-delay", "0.01")
    gw = start_gateway(tmp_path, upstream.url, env=wake_env(listener))
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=ADMIN_KEY, max_retries=0, timeout=90)

    def ask_sdk() -> tuple[str, str | None]:
        text, finish = "", None
        stream = sdk.chat.completions.create(
            model=QWEN,
            messages=MESSAGES,
            stream=True,
            max_tokens=6,
            extra_headers={"X-Request-ID": "wake-sdk"},
        )
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
        return text, finish

    def ask_plain() -> httpx.Response:
        body = {"model": QWEN, "messages": MESSAGES, "max_tokens": 3}
        return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=90)

    try:
        raw = RawStream(gw.url, headers={"X-Request-ID": "wake-raw"}, max_tokens=4).start()
        sdk_thread, sdk_box = _in_thread(ask_sdk)
        plain_thread, plain_box = _in_thread(ask_plain)
        raw.join()
        sdk_thread.join(90)
        plain_thread.join(90)

        # The openai SDK skipped the comments: the whole answer, normally.
        assert "error" not in sdk_box, sdk_box.get("error")
        text, finish = sdk_box["value"]
        assert finish == "length" and len(text.split()) == 6

        # The raw client's answer started after about a second, with comments before any data.
        assert raw.status == 200
        headers = raw.response_headers
        assert headers is not None
        assert headers["content-type"].startswith("text/event-stream")
        assert headers["x-upstream-waking"] == "1"
        assert headers["x-request-id"] == "wake-raw"
        assert "x-upstream-wake-ms" not in headers  # told in the stream instead
        assert 0.7 < raw.headers_at < 5.0, raw.headers_at
        waking = raw.matching(WAKING)
        assert len(waking) >= 2, raw.lines
        assert all(at < raw.first_data_at() for at, _ in waking)
        assert 0.7 < waking[0][0] < 5.0
        waited = [ms for _, ms in waking]
        assert waited == sorted(waited) and waited[0] >= 900 and waited[-1] > waited[0]
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(waking)]
        assert max(gaps) < 5.0  # about every 2 s, with a margin for a loaded machine
        frames = raw.data()
        assert frames[-1] == b"[DONE]"
        chunks = [orjson.loads(f) for f in frames[:-1]]
        said = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert len(said.split()) == 4
        record = _completed(gw, "wake-raw")
        assert record["status"] == 200 and record["error"] is None

        # A non-streaming request in the same wake: unchanged, the header says it waited.
        assert "error" not in plain_box, plain_box.get("error")
        plain: httpx.Response = plain_box["value"]
        assert plain.status_code == 200 and plain.json()["choices"][0]["message"]["content"]
        assert int(plain.headers["x-upstream-wake-ms"]) >= 1000
        assert len(listener.packets) == 1

        # Awake now: a stream goes straight through, with no comment and no header.
        again = RawStream(gw.url, max_tokens=2).start().join()
        assert again.status == 200 and not any(line.startswith(b":") for _, line in again.lines)
        assert again.response_headers is not None
        assert "x-upstream-waking" not in again.response_headers
    finally:
        gw.stop()


def test_a_woken_stream_that_then_queues_goes_on_with_queue_comments(
    tmp_path: Path, slow_waker: Callable[..., tuple[ServerProcess, UdpListener]]
) -> None:
    """Both streams wait for the wake; the model then serves one at a time, so one of them
    waits in the queue as well: one answer, told first of the wake, then of its place."""
    upstream, listener = slow_waker("--parallel", "1")
    gw = start_gateway(tmp_path, upstream.url, env=wake_env(listener))
    try:
        streams = [
            RawStream(gw.url, headers={**SLOW, "X-Request-ID": f"woken-{i}"}, max_tokens=12).start()
            for i in range(2)
        ]
        for stream in streams:
            stream.join()
        assert [s.status for s in streams] == [200, 200]
        queued = [s for s in streams if s.matching(QUEUED)]
        assert len(queued) == 1, [s.lines[:8] for s in streams]
        both = queued[0]
        waking, told = both.matching(WAKING), both.matching(QUEUED)
        assert waking and told
        assert waking[-1][0] <= told[0][0] < both.first_data_at()
        assert told[0][1] == 1
        for stream in streams:
            assert stream.matching(WAKING)
            frames = stream.data()
            assert frames[-1] == b"[DONE]"
            chunks = [orjson.loads(f) for f in frames[:-1]]
            assert all("error" not in c for c in chunks)
            said = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
            assert len(said.split()) == 12
            assert stream.response_headers is not None
            assert stream.response_headers["x-upstream-waking"] == "1"
            assert "x-queue-position" not in stream.response_headers  # one start only
        for i in range(2):
            assert _completed(gw, f"woken-{i}")["status"] == 200
    finally:
        gw.stop()


def test_a_wake_timeout_after_the_early_start_is_an_error_the_sdk_raises(
    tmp_path: Path,
) -> None:
    listener = UdpListener()  # the packet arrives, but nothing wakes
    dead = f"http://127.0.0.1:{free_port()}"
    gw = start_gateway(tmp_path, dead, env=wake_env(listener, LMGATE_WAKE_TIMEOUT="4"))
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=ADMIN_KEY, max_retries=0, timeout=60)

    def ask_sdk() -> None:
        stream = sdk.chat.completions.create(
            model=QWEN,
            messages=MESSAGES,
            stream=True,
            extra_headers={"X-Request-ID": "wake-timeout-sdk"},
        )
        for _ in stream:
            pass

    try:
        started = time.monotonic()
        raw = RawStream(gw.url, headers={"X-Request-ID": "wake-timeout-raw"}).start()
        opted_out = RawStream(
            gw.url,
            headers={"X-Lmgate-Queue-Comments": "Off", "X-Request-ID": "wake-timeout-quiet"},
        ).start()
        sdk_thread, sdk_box = _in_thread(ask_sdk)
        raw.join()
        opted_out.join()
        sdk_thread.join(60)
        elapsed = time.monotonic() - started

        error = sdk_box.get("error")
        assert isinstance(error, openai.APIError), sdk_box
        body: Any = error.body
        assert body["code"] == "wake_timeout" and body["type"] == "server_error"
        assert 3.0 < elapsed < 30.0

        assert raw.status == 200 and raw.matching(WAKING)
        frames = raw.data()
        assert len(frames) == 1
        refused = orjson.loads(frames[0])["error"]
        assert refused["code"] == "wake_timeout" and refused["message"]
        for request_id in ("wake-timeout-sdk", "wake-timeout-raw"):
            record = _completed(gw, request_id)
            assert record["status"] == 503
            assert "sent in the event stream" in record["error"]

        # Opted out: no early bytes, the refusal is the status line itself.
        assert opted_out.status == 503 and opted_out.headers_at > 3.0
        assert not any(line.startswith(b":") for _, line in opted_out.lines)
        quiet = orjson.loads(b"".join(line for _, line in opted_out.lines))
        assert quiet["error"]["code"] == "wake_timeout"
        assert _completed(gw, "wake-timeout-quiet")["status"] == 503
        assert len(listener.packets) == 1
    finally:
        gw.stop()
        listener.close()


def test_a_stream_that_leaves_during_the_comments_frees_its_place(tmp_path: Path) -> None:
    listener = UdpListener()
    dead = f"http://127.0.0.1:{free_port()}"
    env = wake_env(listener, LMGATE_WAKE_TIMEOUT="6", LMGATE_QUEUE_MAX="1")
    gw = start_gateway(tmp_path, dead, env=env)
    body = {"model": QWEN, "messages": MESSAGES, "stream": True}
    try:
        with (
            httpx.Client(base_url=gw.url, headers=AUTH, timeout=30) as http,
            http.stream(
                "POST", "/v1/chat/completions", json=body, headers={"X-Request-ID": "left"}
            ) as resp,
        ):
            assert resp.status_code == 200
            assert WAKING.match(next(resp.iter_lines()).encode())
        # gone: its place is free again, so this one is held (and told) instead of refused
        time.sleep(0.3)
        record = _completed(gw, "left")
        assert record["status"] == 499
        after = RawStream(gw.url).start().join()
        assert after.status == 200 and after.matching(WAKING)
        assert orjson.loads(after.data()[-1])["error"]["code"] == "wake_timeout"
    finally:
        gw.stop()
        listener.close()


def test_comments_off_by_setting_leaves_streams_unstarted(tmp_path: Path) -> None:
    listener = UdpListener()
    dead = f"http://127.0.0.1:{free_port()}"
    env = wake_env(listener, LMGATE_WAKE_TIMEOUT="2.5", LMGATE_QUEUE_SSE_COMMENTS="false")
    gw = start_gateway(tmp_path, dead, env=env)
    try:
        stream = RawStream(gw.url).start().join()
        assert stream.status == 503 and stream.headers_at > 2.0
        assert stream.response_headers is not None
        assert stream.response_headers["content-type"].startswith("application/json")
        assert not any(line.startswith(b":") for _, line in stream.lines)
    finally:
        gw.stop()
        listener.close()


def test_a_flood_of_held_streams_stays_bounded(tmp_path: Path) -> None:
    """Streams held for a wake hold an open answer each: at most LMGATE_QUEUE_MAX do, the rest
    are refused at once with a plain 503; memory stays flat and /health is served meanwhile."""
    listener = UdpListener()
    dead = f"http://127.0.0.1:{free_port()}"
    env = wake_env(listener, LMGATE_WAKE_TIMEOUT="6", LMGATE_QUEUE_MAX="40")
    gw = start_gateway(tmp_path, dead, env=env)
    assert gw.proc is not None
    proc = psutil.Process(gw.proc.pid)
    body = {"model": QWEN, "messages": MESSAGES, "stream": True}

    async def one(client: httpx.AsyncClient) -> tuple[int, bytes, float]:
        started = time.monotonic()
        async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
            at = time.monotonic() - started
            return resp.status_code, await resp.aread(), at

    async def flood() -> tuple[list[tuple[int, bytes, float]], float, int]:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=gw.url, headers=AUTH, timeout=60, limits=limits
        ) as client:
            tasks = [asyncio.create_task(one(client)) for _ in range(150)]
            await asyncio.sleep(2.5)  # the held ones have started their answers by now
            started = time.monotonic()
            health = await client.get("/health")
            health_s = time.monotonic() - started
            return list(await asyncio.gather(*tasks)), health_s, health.status_code

    try:
        rss_before = proc.memory_info().rss
        started = time.monotonic()
        answers, health_s, health_status = asyncio.run(flood())
        elapsed = time.monotonic() - started
        rss_after = proc.memory_info().rss
        held = [a for a in answers if a[0] == 200]
        refused = [a for a in answers if a[0] == 503]
        assert len(held) == 40 and len(refused) == 110
        for _, text, _ in held:
            assert text.startswith(b": waking upstream waited_ms=")
            last = text.rstrip().rsplit(b"\n", 1)[-1]
            assert orjson.loads(last.removeprefix(b"data: "))["error"]["code"] == "wake_timeout"
        assert all(orjson.loads(t)["error"]["code"] == "upstream_asleep" for _, t, _ in refused)
        refused_within = max(at for _, _, at in refused)
        assert refused_within < 8, refused_within
        assert health_status == 200 and health_s < 5
        assert elapsed < 40
        assert rss_after - rss_before < 40 * 1024 * 1024, (rss_before, rss_after)
        assert len(listener.packets) == 1
        print(
            f"held-stream-flood: 150 streams, {elapsed:.1f} s, refused within "
            f"{refused_within:.2f} s, RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB"
            f", /health {health_s:.3f} s"
        )
    finally:
        gw.stop()
        listener.close()


# -- the queue after an early start (one piece, in process) -----------------------------------


class _Answer:
    """An `EarlyAnswer` that records what it was asked to send."""

    def __init__(self, started: bool = False) -> None:
        self.started = started
        self.starts = 0
        self.writes: list[bytes] = []

    async def start(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        self.starts += 1

    async def write(self, chunk: bytes) -> None:
        self.writes.append(chunk)


def test_the_queue_does_not_start_an_answer_the_wake_started() -> None:
    async def run(answer: EarlyAnswer) -> Admit | Reject:
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[Admit | Reject] = loop.create_future()
        loop.call_later(0.3, verdict.set_result, Admit("r1", "upstream", QWEN, 0.3, 1))
        return await wait_announcing(verdict, answer, lambda: QueueInfo(1, 100), after=0.05)

    woken = _Answer(started=True)
    assert isinstance(asyncio.run(run(woken)), Admit)
    assert woken.starts == 0 and woken.writes == [comment(QueueInfo(1, 100))]
    fresh = _Answer()
    assert isinstance(asyncio.run(run(fresh)), Admit)
    assert fresh.starts == 1 and fresh.writes == [comment(QueueInfo(1, 100))]
