"""The scheduler in the request path, end to end: a real gateway in front of the LM Studio
emulator, real clients (the openai SDK, httpx, raw sockets)."""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.observe.helpers import EventReader
from tests.servers import (
    ADMIN_KEY,
    ServerProcess,
    admin_headers,
    start_emulator,
    start_gateway,
    upstream_requests,
)

QWEN = "qwen/qwen3-4b"
GEMMA = "google/gemma-3-1b"
KEY_A, KEY_B = "sk-key-a-0123456789", "sk-key-b-0123456789"
BASE = {
    "LMGATE_ADMIN_KEY": ADMIN_KEY,
    "LMGATE_API_KEYS": f"{KEY_A},{KEY_B}",
    "LMGATE_SYNC_INTERVAL": "0.3",
}
MESSAGES: Any = [{"role": "user", "content": "hello"}]


def _stats(emu: ServerProcess) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(emu.url + "/__emulator/generations").json()
    return stats


def _queue(gw: ServerProcess) -> dict[str, Any]:
    queue: dict[str, Any] = httpx.get(gw.url + "/debug/queue", headers=admin_headers()).json()
    return queue


def _until(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _synced(gw: ServerProcess, model: str = QWEN) -> None:
    """The scheduler has seen the upstream's listing (it schedules models it knows)."""
    _until(lambda: any(m["model"] == model for m in _queue(gw)["models"]))


@pytest.fixture
def servers(tmp_root: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    """An emulator and a gateway, started by `start(emulator_args, gateway_env)`."""
    started: list[ServerProcess] = []

    def start(emu_args: tuple[str, ...], env: dict[str, str]) -> tuple[Any, Any]:
        emu = start_emulator(tmp_root, *emu_args, name=f"emu-{request.node.name[:40]}")
        started.append(emu)
        gw = start_gateway(tmp_root, emu.url, env={**BASE, **env})
        started.append(gw)
        _synced(gw)
        return emu, gw

    yield start  # type: ignore[misc]
    for server in reversed(started):
        server.stop()


def _client(gw: ServerProcess, key: str = KEY_A, timeout: float = 60.0) -> openai.OpenAI:
    """Queue headers on the answer, however long it waited (`test_queue_comments` covers the
    stream's own comments)."""
    return openai.OpenAI(
        base_url=gw.url + "/v1",
        api_key=key,
        max_retries=0,
        timeout=timeout,
        default_headers={"X-Lmgate-Queue-Comments": "off"},
    )


def _chat(client: openai.OpenAI, model: str = QWEN, tokens: int = 6, **extra: Any) -> Any:
    """A streamed chat answer, read to its end; returns (headers, text, finish_reason)."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, stream=True, max_tokens=tokens, **extra
    )
    text, finish = "", None
    for chunk in raw.parse():
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return raw.headers, text, finish


def test_slots_are_never_exceeded_and_waiting_answers_carry_their_position(servers: Any) -> None:
    emu, gw = servers(("--parallel", "2", "--token-delay", "0.05"), {})
    client = _client(gw)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _chat(client), range(8)))
    assert all(finish == "length" and text for _, text, finish in results)
    assert _stats(emu)["peak_generating"][QWEN] == 2
    waited = [h for h, _, _ in results if "x-queue-position" in h]
    assert len(waited) >= 4  # 8 requests, 2 slots: most waited
    for headers in waited:
        assert int(headers["x-queue-position"]) >= 1
        assert int(headers["x-queue-wait-ms"]) >= 0
    assert _queue(gw)["waiting"] == []


def test_one_slot_serves_in_arrival_order_with_positions(servers: Any) -> None:
    emu, gw = servers(("--parallel", "1", "--token-delay", "0.1"), {})
    client = _client(gw)
    results: dict[int, Any] = {}
    finished: list[int] = []

    def ask(i: int) -> None:
        results[i] = _chat(client, tokens=4, user=f"n{i}")
        finished.append(i)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    threads[0].start()
    _until(lambda: _stats(emu)["generating"].get(QWEN) == 1)
    for i, thread in enumerate(threads[1:], 1):
        thread.start()
        _until(lambda i=i: len(_queue(gw)["waiting"]) >= i)  # type: ignore[misc]
    for thread in threads:
        thread.join(60)
    assert finished == [0, 1, 2, 3]
    assert "x-queue-position" not in results[0][0]
    assert [int(results[i][0]["x-queue-position"]) for i in (1, 2, 3)] == [1, 2, 3]
    assert _stats(emu)["peak_generating"][QWEN] == 1


def test_queue_full_is_429_and_queue_timeout_is_503_with_retry_after(servers: Any) -> None:
    emu, gw = servers(
        (
            "--parallel",
            "1",
        ),
        {"LMGATE_QUEUE_MAX": "1", "LMGATE_QUEUE_TIMEOUT": "1.5"},
    )
    slow = {"x-emulator-token-delay": "0.5"}
    busy = threading.Thread(
        target=_chat, args=(_client(gw),), kwargs={"tokens": 12, "extra_headers": slow}
    )
    busy.start()
    _until(lambda: _stats(emu)["generating"].get(QWEN) == 1)
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        auth = {"Authorization": f"Bearer {KEY_A}"}
        body = {"model": QWEN, "messages": MESSAGES, "max_tokens": 2}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            waiting = pool.submit(http.post, "/v1/chat/completions", json=body, headers=auth)
            _until(lambda: len(_queue(gw)["waiting"]) == 1)
            full = http.post("/v1/chat/completions", json=body, headers=auth)
            assert full.status_code == 429
            assert full.json()["error"]["code"] == "queue_full"
            assert int(full.headers["retry-after"]) >= 1
            timed_out = waiting.result()
            elapsed = time.monotonic() - started
    assert timed_out.status_code == 503
    error = timed_out.json()["error"]
    assert error["code"] == "queue_timeout" and error["message"]
    assert int(timed_out.headers["retry-after"]) >= 1
    assert 1.2 < elapsed < 10.0
    busy.join(30)
    assert _stats(emu)["peak_generating"][QWEN] == 1


def test_a_client_leaving_while_queued_never_reaches_the_upstream(
    servers: Any, tmp_root: Path
) -> None:
    emu, gw = servers(
        (
            "--parallel",
            "1",
        ),
        {},
    )
    busy = threading.Thread(
        target=_chat,
        args=(_client(gw),),
        kwargs={"tokens": 8, "extra_headers": {"x-emulator-token-delay": "0.3"}},
    )
    busy.start()
    _until(lambda: _stats(emu)["generating"].get(QWEN) == 1)
    body = b'{"model": "%s", "messages": [{"role": "user", "content": "GONE-MARKER"}]}' % (
        QWEN.encode()
    )
    for _ in range(3):  # leave in a few ways: closed socket, reset, read timeout
        sock = socket.create_connection(("127.0.0.1", gw.port))
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + KEY_A.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        _until(lambda: len(_queue(gw)["waiting"]) == 1)
        sock.close()
        _until(lambda: _queue(gw)["waiting"] == [], timeout=5.0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": QWEN, "messages": [{"role": "user", "content": "GONE-MARKER"}]},
            headers={"Authorization": f"Bearer {KEY_A}"},
            timeout=0.5,
        )
    _until(lambda: _queue(gw)["waiting"] == [], timeout=5.0)
    busy.join(30)
    # The slot is free again and a later request is served at once.
    assert _chat(_client(gw), tokens=2)[2] == "length"
    with httpx.Client(base_url=emu.url) as up:
        sent = [str(r["body"]) for r in upstream_requests(up)]
    assert not any("GONE-MARKER" in s for s in sent)


def test_a_switch_waits_for_the_running_stream_on_its_victim(servers: Any) -> None:
    emu, gw = servers(
        ("--load-delay", "0.5"),
        {
            "LMGATE_ON_DEMAND_LOAD": "true",
            "LMGATE_MAX_LOADED_MODELS": "1",
            "LMGATE_MANAGE_ALL_MODELS": "true",
        },
    )
    reader = EventReader(gw.url, "?types=model_switch_start,model_switch_complete")
    try:
        reader.next("connected")
        client = _client(gw)
        box: dict[str, Any] = {}
        stream = threading.Thread(
            target=lambda: box.update(
                qwen=_chat(client, tokens=10, extra_headers={"x-emulator-token-delay": "0.2"})
            )
        )
        stream.start()
        _until(lambda: _stats(emu)["generating"].get(QWEN) == 1)
        headers, text, finish = _chat(client, model=GEMMA, tokens=3)
        stream.join(30)
        _, qwen_text, qwen_finish = box["qwen"]
        assert qwen_finish == "length" and len(qwen_text.split()) >= 5  # intact, not cut off
        assert finish == "length" and text
        assert int(headers["x-queue-position"]) == 1
        assert _stats(emu)["busy_unloads"] == 0
        start = reader.next("model_switch_start")
        assert start["modelKey"] == GEMMA and start["victims"] == [QWEN]
        assert reader.next("model_switch_complete")["ok"] is True
    finally:
        reader.close()
    # Evicting the active model (none here) is not clearing it; the instance list is one model.
    loaded = [m["model"] for m in _queue(gw)["models"]]
    assert loaded == [GEMMA]


def test_idle_ttl_unloads_what_lmgate_loaded_only(servers: Any) -> None:
    emu, gw = servers(
        ("--load-delay", "0.1"), {"LMGATE_ON_DEMAND_LOAD": "true", "LMGATE_MODEL_TTL": "1"}
    )
    reader = EventReader(gw.url, "?types=model_idle_unloaded")
    try:
        reader.next("connected")
        assert _chat(_client(gw), model=GEMMA, tokens=2)[2] == "length"
        gone = reader.next("model_idle_unloaded", timeout=15)
        assert gone["modelKey"] == GEMMA
        loaded = httpx.post(
            gw.url + "/admin/models/load", json={"modelKey": GEMMA}, headers=admin_headers()
        )
        assert loaded.status_code == 200 and loaded.json()["alreadyLoaded"] is False
        assert reader.next("model_idle_unloaded", timeout=15)["modelKey"] == GEMMA
    finally:
        reader.close()
    with httpx.Client(base_url=emu.url) as up:
        models = up.get("/api/v1/models").json()["models"]
    loaded = {m["key"] for m in models if m["loaded_instances"]}
    assert loaded == {QWEN}  # preloaded by "someone else": left alone
    time.sleep(1.5)
    assert QWEN in {m["model"] for m in _queue(gw)["models"]}


def test_a_flooding_key_does_not_push_another_keys_request_behind_its_own(
    servers: Any,
) -> None:
    emu, gw = servers(("--parallel", "1", "--token-delay", "0.05"), {"LMGATE_QUEUE_MAX": "64"})
    flooder = _client(gw, KEY_A, timeout=120)
    service = time.monotonic()
    _chat(flooder, tokens=4)
    service = time.monotonic() - service  # one answer on an idle gateway
    with concurrent.futures.ThreadPoolExecutor(31) as pool:
        flood = [pool.submit(_chat, flooder, tokens=4) for _ in range(30)]
        _until(lambda: len(_queue(gw)["waiting"]) >= 20)
        started = time.monotonic()
        headers, _, finish = _chat(_client(gw, KEY_B), tokens=4)
        waited = time.monotonic() - started
        pending = sum(not f.done() for f in flood)
        for f in flood:
            assert f.result()[2] == "length"
    assert finish == "length"
    assert int(headers["x-queue-position"]) <= 2
    assert pending >= 10  # the flood was still queued when B was served
    assert waited < 3 * service + 2.0, (waited, service)
    queue = _queue(gw)
    assert queue["waiting"] == []
    assert _stats(emu)["peak_generating"][QWEN] == 1


def test_queue_metrics_and_debug_queue_need_admin(servers: Any) -> None:
    _, gw = servers(
        (
            "--parallel",
            "1",
        ),
        {},
    )
    denied = httpx.get(gw.url + "/debug/queue", headers={"Authorization": f"Bearer {KEY_A}"})
    assert denied.status_code in (401, 403)
    queue = _queue(gw)
    model = next(m for m in queue["models"] if m["model"] == QWEN)
    assert model["slots"] == 1 and model["inFlight"] == 0 and model["owned"] is False
    assert queue["upstreams"][0]["canLoad"] is False  # on-demand loading is off
    _chat(_client(gw), tokens=2)
    metrics = httpx.get(gw.url + "/metrics", headers=admin_headers()).text
    assert "lmgate_queue_wait_seconds" in metrics and "lmgate_queue_length" in metrics
