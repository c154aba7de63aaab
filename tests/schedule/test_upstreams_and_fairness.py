"""The scheduler's promises against real servers, per upstream kind and worker layout: the
fairness measurement (one key floods with 50 concurrent requests, another asks once a second),
LM Studio 0.3 and a plain OpenAI-compatible server (queueing and slots, no switching), the
memory budget read from `size_bytes`, the active model evicted last and loaded again, and a
client leaving while queued on a non-primary worker."""

from __future__ import annotations

import concurrent.futures
import functools
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from lmgate.settings import Settings
from tests.observe.helpers import EventReader
from tests.servers import (
    ADMIN_KEY,
    METRICS_KEY,
    ServerProcess,
    admin_headers,
    free_port,
    start_emulator,
    start_gateway,
    upstream_requests,
)

QWEN = "qwen/qwen3-4b"
GEMMA = "google/gemma-3-1b"
EMBED = "text-embedding-nomic-embed-text-v1.5"
KEY_A, KEY_B = "sk-fair-a-0123456789", "sk-fair-b-0123456789"
BASE = {
    "LMGATE_ADMIN_KEY": ADMIN_KEY,
    "LMGATE_API_KEYS": f"{KEY_A},{KEY_B}",
    "LMGATE_SYNC_INTERVAL": "0.3",
}
MESSAGES: Any = [{"role": "user", "content": "hello"}]


def _until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _queue(gw: ServerProcess) -> dict[str, Any]:
    headers = {**admin_headers(), "Connection": "close"}
    answer = httpx.get(gw.url + "/debug/queue", headers=headers)
    answer.raise_for_status()  # a worker still reaching the shared core answers 503: not yet
    queue: dict[str, Any] = answer.json()
    return queue


def _waiting_at_least(gw: ServerProcess, count: int) -> bool:
    return len(_queue(gw)["waiting"]) >= count


def _synced(gw: ServerProcess, model: str) -> None:
    _until(lambda: any(m["model"] == model for m in _queue(gw)["models"]))


def _client(gw: ServerProcess, key: str, timeout: float = 120.0) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gw.url + "/v1",
        api_key=key,
        max_retries=0,
        timeout=timeout,
        default_headers={"X-Lmgate-Queue-Comments": "off"},
    )


def _chat(client: openai.OpenAI, model: str = QWEN, tokens: int = 4) -> Any:
    """A streamed answer read to its end: (headers, text, finish_reason, seconds)."""
    started = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, stream=True, max_tokens=tokens
    )
    text, finish = "", None
    for chunk in raw.parse():
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return raw.headers, text, finish, time.monotonic() - started


def _emu_stats(emu: ServerProcess) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(emu.url + "/__emulator/generations").json()
    return stats


def _emu_loaded(emu: ServerProcess) -> set[str]:
    models = httpx.get(emu.url + "/api/v1/models").json()["models"]
    return {m["key"] for m in models if m["loaded_instances"]}


@pytest.fixture
def started(tmp_root: Path) -> Iterator[list[ServerProcess]]:
    servers: list[ServerProcess] = []
    yield servers
    for server in reversed(servers):
        server.stop()


# -- fair share: the issue's own measurement ---------------------------------------------------


def test_a_one_per_second_key_waits_within_one_service_time_while_another_sends_fifty(
    tmp_root: Path, started: list[ServerProcess]
) -> None:
    emu = start_emulator(tmp_root, "--parallel", "2", "--token-delay", "0.05", name="emu-fair")
    started.append(emu)
    gw = start_gateway(tmp_root, emu.url, env={**BASE, "LMGATE_QUEUE_MAX": "128"})
    started.append(gw)
    _synced(gw, QWEN)
    b = _client(gw, KEY_B)
    idle = statistics.median(_chat(b)[3] for _ in range(3))  # B alone: its service time
    flooder = _client(gw, KEY_A)
    stop = threading.Event()
    a_times: list[float] = []

    def flood() -> None:
        while not stop.is_set():
            a_times.append(_chat(flooder)[3])

    b_times: list[float] = []
    b_positions: list[int] = []
    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        floods = [pool.submit(flood) for _ in range(50)]
        _until(lambda: len(_queue(gw)["waiting"]) >= 40)
        for _ in range(8):
            tick = time.monotonic()
            headers, _, finish, took = _chat(b)
            assert finish == "length"
            b_times.append(took)
            if "x-queue-position" in headers:
                b_positions.append(int(headers["x-queue-position"]))
            assert len(_queue(gw)["waiting"]) >= 20  # A still floods while B asks
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        stop.set()
        for f in floods:
            f.result()
    # Each of B's answers: one service time on an idle gateway, plus at most one service time
    # waiting for a slot (margin for a loaded box); A's own requests waited through the flood.
    assert max(b_times) < 2 * idle + 1.0, (b_times, idle)
    # Next whatever A has queued; only A's first queued request, light itself when it came,
    # may go before B's first.
    assert all(p <= 2 for p in b_positions) and set(b_positions[1:]) <= {1}, b_positions
    assert statistics.mean(a_times) > 3 * statistics.mean(b_times), (a_times, b_times)
    assert _emu_stats(emu)["peak_generating"][QWEN] == 2


# -- upstreams without load API -----------------------------------------------------------------


@pytest.mark.parametrize("sdk", [False, True])
def test_lm_studio_03_gets_one_slot_per_model_and_switches_only_with_a_load_surface(
    tmp_root: Path, started: list[ServerProcess], sdk: bool
) -> None:
    args = ("--version", "0.3", "--token-delay", "0.05", *(() if sdk else ("--no-sdk",)))
    emu = start_emulator(tmp_root, *args, name="emu-03")
    started.append(emu)
    gw = start_gateway(tmp_root, emu.url, env={**BASE, "LMGATE_ON_DEMAND_LOAD": "true"})
    started.append(gw)
    _synced(gw, QWEN)
    client = _client(gw, KEY_A)
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: _chat(client, tokens=5), range(5)))
    assert all(r[2] == "length" for r in results)
    assert sum("x-queue-position" in r[0] for r in results) >= 3
    assert _emu_stats(emu)["peak_generating"][QWEN] == 1
    queue = _queue(gw)
    assert queue["upstreams"][0]["canLoad"] is sdk  # 0.3 loads through its SDK websocket only
    assert next(m for m in queue["models"] if m["model"] == QWEN)["slots"] == 1


def test_a_plain_openai_upstream_queues_within_its_slots_and_shares_fairly(
    tmp_root: Path, started: list[ServerProcess]
) -> None:
    port = free_port()
    plain = ServerProcess(
        [sys.executable, "-m", "tests.schedule.plain_openai", str(port), "0.05"],
        port=port,
        ready_path="/v1/models",
        log=tmp_root / f"plain-{port}.log",
    ).start()
    started.append(plain)
    env = {**BASE, "LMGATE_MODEL_SLOTS": "2", "LMGATE_ON_DEMAND_LOAD": "true"}
    gw = start_gateway(tmp_root, plain.url, env=env)
    started.append(gw)
    _synced(gw, "plain-model-a")
    assert _queue(gw)["upstreams"][0]["canLoad"] is False
    a, b = _client(gw, KEY_A), _client(gw, KEY_B)
    with concurrent.futures.ThreadPoolExecutor(21) as pool:
        flood = [pool.submit(_chat, a, "plain-model-a", 6) for _ in range(20)]
        _until(lambda: len(_queue(gw)["waiting"]) >= 12)
        headers, _, finish, _ = _chat(b, "plain-model-a", 6)
        pending = sum(not f.done() for f in flood)
        assert all(f.result()[2] == "length" for f in flood)
    assert finish == "length"
    assert int(headers["x-queue-position"]) <= 2  # not behind A's whole flood
    assert pending >= 6
    stats = httpx.get(plain.url + "/__stats").json()
    assert stats["peak"] == 2  # the model's slots, never more


def _switch(reader: EventReader, model: str) -> dict[str, Any]:
    """The next `model_switch_start` that loads `model`."""
    while True:
        event: dict[str, Any] = reader.next("model_switch_start")
        if event["modelKey"] == model:
            return event


# -- switching by memory budget, the active model ------------------------------------------------


def test_memory_budget_settings_take_binary_and_decimal_units() -> None:
    assert Settings(model_memory_budget="20GiB").model_memory_budget == 20 * 2**30
    assert Settings(model_memory_budget="512MB").model_memory_budget == 512 * 10**6


def test_a_load_that_does_not_fit_the_memory_budget_evicts_by_size_bytes(
    tmp_root: Path, started: list[ServerProcess]
) -> None:
    # qwen (2.50 GB) + gemma (0.72 GB) exceed 3 GB; gemma + the embedding model (0.08 GB) fit.
    emu = start_emulator(tmp_root, "--load-delay", "0.2", name="emu-budget")
    started.append(emu)
    env = {
        **BASE,
        "LMGATE_ON_DEMAND_LOAD": "true",
        "LMGATE_MANAGE_ALL_MODELS": "true",
        "LMGATE_MODEL_MEMORY_BUDGET": "3GB",
    }
    gw = start_gateway(tmp_root, emu.url, env=env)
    started.append(gw)
    _synced(gw, QWEN)
    assert _queue(gw)["upstreams"][0]["memoryBudget"] == 3 * 10**9
    reader = EventReader(gw.url, "?types=model_switch_start,model_switch_complete")
    try:
        reader.next("connected")
        assert _chat(_client(gw, KEY_A), GEMMA)[2] == "length"
        start = reader.next("model_switch_start")
        assert start["modelKey"] == GEMMA and start["victims"] == [QWEN]
        assert start["reason"] == "demand"
        complete = reader.next("model_switch_complete")
        assert complete["ok"] is True and complete["modelKey"] == GEMMA
        assert complete["victims"] == [QWEN] and complete["reason"] == "demand"
        assert _emu_loaded(emu) == {GEMMA}
        embedded = httpx.post(
            gw.url + "/v1/embeddings",
            json={"model": EMBED, "input": "hi"},
            headers={"Authorization": f"Bearer {KEY_A}"},
            timeout=30,
        )
        assert embedded.status_code == 200
        assert reader.next("model_switch_start")["victims"] == []  # it fits beside gemma
    finally:
        reader.close()
    assert _emu_loaded(emu) == {GEMMA, EMBED}
    assert _queue(gw)["upstreams"][0]["bytesUsed"] <= 3 * 10**9
    assert _emu_stats(emu)["busy_unloads"] == 0
    metrics = httpx.get(gw.url + "/metrics", headers=admin_headers()).text
    assert f'lmgate_model_switches_total{{model="{GEMMA}",reason="demand"}} 1.0' in metrics
    assert f'lmgate_model_evictions_total{{model="{QWEN}",reason="make_room"}} 1.0' in metrics


def test_waiting_requests_are_told_as_queued_and_dequeued_events_with_their_wait(
    tmp_root: Path, started: list[ServerProcess]
) -> None:
    emu = start_emulator(tmp_root, "--parallel", "1", "--token-delay", "0.1", name="emu-ev")
    started.append(emu)
    gw = start_gateway(tmp_root, emu.url, env={**BASE, "LMGATE_METRICS_KEY": METRICS_KEY})
    started.append(gw)
    _synced(gw, QWEN)
    for key, status in ((None, 401), (KEY_A, 403), (METRICS_KEY, 403)):
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        assert httpx.get(gw.url + "/debug/queue", headers=headers).status_code == status
    reader = EventReader(gw.url, "?types=request_queued,request_dequeued")
    try:
        reader.next("connected")
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            answers = [pool.submit(_chat, _client(gw, KEY_A), QWEN, 5) for _ in range(3)]
            results = [a.result() for a in answers]
        queued = [reader.next("request_queued") for _ in range(2)]
        dequeued = [reader.next("request_dequeued") for _ in range(2)]
    finally:
        reader.close()
    assert sorted(q["position"] for q in queued) == [1, 2]
    assert all(q["model"] == QWEN and q["key"] for q in queued)
    assert all(d["model"] == QWEN and d["waitedMs"] >= 100 for d in dequeued)
    waits = sorted(int(r[0]["x-queue-wait-ms"]) for r in results if "x-queue-wait-ms" in r[0])
    assert len(waits) == 2 and waits[1] > waits[0]
    metrics = httpx.get(gw.url + "/metrics", headers=admin_headers(METRICS_KEY)).text
    assert f'lmgate_queue_wait_seconds_count{{model="{QWEN}"}} 2.0' in metrics
    assert f'lmgate_queue_length{{model="{QWEN}"}} 0.0' in metrics


def test_the_active_model_is_evicted_last_and_loaded_again_for_model_less_requests(
    tmp_root: Path, started: list[ServerProcess]
) -> None:
    emu = start_emulator(tmp_root, "--load-delay", "0.2", "--no-preload", name="emu-active")
    started.append(emu)
    env = {**BASE, "LMGATE_ON_DEMAND_LOAD": "true", "LMGATE_MAX_LOADED_MODELS": "2"}
    gw = start_gateway(tmp_root, emu.url, env=env)
    started.append(gw)
    admin = httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=30)
    reader = EventReader(gw.url, "?types=model_switch_start")
    try:
        reader.next("connected")
        _until(lambda: admin.get("/admin/models").status_code == 200)
        loaded = admin.post("/admin/models/load", json={"modelKey": QWEN, "activate": True})
        assert loaded.status_code == 200, loaded.text
        _synced(gw, QWEN)
        client = _client(gw, KEY_A)
        time.sleep(0.2)
        assert _chat(client, GEMMA)[2] == "length"  # room for two: qwen (active) and gemma
        assert _switch(reader, GEMMA)["victims"] == []
        # The embedding model needs room: the active qwen, least recently used, goes last.
        embedded = httpx.post(
            gw.url + "/v1/embeddings",
            json={"model": EMBED, "input": "hi"},
            headers={"Authorization": f"Bearer {KEY_A}"},
            timeout=30,
        )
        assert embedded.status_code == 200, embedded.text
        assert _switch(reader, EMBED)["victims"] == [GEMMA]
        assert _emu_loaded(emu) == {QWEN, EMBED}
        # Gemma again: now the only idle model that is not active is the embedding model.
        assert _chat(client, GEMMA)[2] == "length"
        assert _switch(reader, GEMMA)["victims"] == [EMBED]
        assert _emu_loaded(emu) == {QWEN, GEMMA}
    finally:
        reader.close()
        admin.close()


def test_evicting_the_active_model_keeps_the_activation_and_the_next_request_reloads_it(
    tmp_root: Path, started: list[ServerProcess]
) -> None:
    emu = start_emulator(tmp_root, "--load-delay", "0.2", "--no-preload", name="emu-active1")
    started.append(emu)
    env = {**BASE, "LMGATE_ON_DEMAND_LOAD": "true", "LMGATE_MAX_LOADED_MODELS": "1"}
    gw = start_gateway(tmp_root, emu.url, env=env)
    started.append(gw)
    admin = httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=30)
    try:
        _until(lambda: admin.get("/admin/models").status_code == 200)
        loaded = admin.post("/admin/models/load", json={"modelKey": QWEN, "activate": True})
        assert loaded.status_code == 200, loaded.text
        _synced(gw, QWEN)
        client = _client(gw, KEY_A)
        assert _chat(client, GEMMA)[2] == "length"  # the only candidate: the active model
        assert _emu_loaded(emu) == {GEMMA}
        assert admin.get("/admin/models").json()["activeModel"] == QWEN
        answer = httpx.post(  # no model: the active one
            gw.url + "/v1/chat/completions",
            json={"messages": MESSAGES, "max_tokens": 3},
            headers={"Authorization": f"Bearer {KEY_A}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == QWEN
        assert _emu_loaded(emu) == {QWEN}
        assert admin.get("/admin/models").json()["activeModel"] == QWEN
        with httpx.Client(base_url=emu.url) as up:
            chats = [r for r in upstream_requests(up) if "chat" in str(r.get("path"))]
        assert chats and "qwen" in str(chats[-1]["body"])
    finally:
        admin.close()


# -- several workers: a client leaving on any worker ---------------------------------------------


def _worker_pids_holding(gw: ServerProcess, local_ports: set[int]) -> set[int]:
    """The gateway's worker processes that hold an accepted connection from `local_ports`."""
    assert gw.proc is not None
    pids: set[int] = set()
    for proc in [psutil.Process(gw.proc.pid), *psutil.Process(gw.proc.pid).children(True)]:
        try:
            conns = proc.net_connections("tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for conn in conns:
            if conn.laddr and conn.laddr.port == gw.port and conn.raddr:
                if conn.raddr.port in local_ports:
                    pids.add(proc.pid)
    return pids


def _leave_waiting_on_both_workers(gw: ServerProcess, socks: list[socket.socket]) -> None:
    """Raw clients queue one by one until each worker holds some of them."""
    ports: set[int] = set()
    while len(socks) < 40:
        i = len(socks)
        body = b'{"model": "%s", "messages": [{"role": "user", "content": "LEFT-%d"}]}' % (
            QWEN.encode(),
            i,
        )
        sock = socket.create_connection(("127.0.0.1", gw.port))
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + KEY_B.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        socks.append(sock)
        ports.add(sock.getsockname()[1])
        _until(functools.partial(_waiting_at_least, gw, len(socks)))
        if len(socks) >= 6 and len(_worker_pids_holding(gw, ports)) >= 2:
            break
    assert len(_worker_pids_holding(gw, ports)) >= 2  # both workers hold waiting clients


def test_clients_leaving_on_every_worker_never_reach_the_upstream(
    tmp_root: Path, started: list[ServerProcess]
) -> None:
    emu = start_emulator(tmp_root, "--parallel", "1", "--token-delay", "0.2", name="emu-leave")
    started.append(emu)
    gw = start_gateway(tmp_root, emu.url, "--workers", "2", env=BASE)
    started.append(gw)
    _synced(gw, QWEN)
    busy = threading.Thread(target=_chat, args=(_client(gw, KEY_A), QWEN, 30))
    busy.start()
    _until(lambda: _emu_stats(emu)["generating"].get(QWEN) == 1)
    socks: list[socket.socket] = []
    try:
        _leave_waiting_on_both_workers(gw, socks)
    finally:
        for sock in socks:
            sock.close()
    _until(lambda: _queue(gw)["waiting"] == [], timeout=10)
    busy.join(60)
    _, _, finish, took = _chat(_client(gw, KEY_A), QWEN, 2)
    assert finish == "length" and took < 10
    with httpx.Client(base_url=emu.url) as up:
        sent = [str(r["body"]) for r in upstream_requests(up)]
    assert not any("LEFT-" in s for s in sent)


# -- keeping the active model loaded --------------------------------------------------------------


def test_keep_active_loaded_reloads_the_active_model_once_after_an_idle_unload(
    tmp_root: Path, started: list[ServerProcess]
) -> None:
    emu = start_emulator(tmp_root, "--load-delay", "0.1", "--no-preload", name="emu-keep")
    started.append(emu)
    env = {
        **BASE,
        "LMGATE_ON_DEMAND_LOAD": "true",
        "LMGATE_MODEL_TTL": "1",
        "LMGATE_KEEP_ACTIVE_LOADED": "true",
    }
    gw = start_gateway(tmp_root, emu.url, env=env)
    started.append(gw)
    reader = EventReader(gw.url, "?types=model_idle_unloaded,model_switch_start")
    admin = httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=30)
    try:
        reader.next("connected")
        _until(lambda: admin.get("/admin/models").status_code == 200)
        for model in (QWEN, GEMMA):
            answer = admin.post("/admin/models/load", json={"modelKey": model})
            assert answer.status_code == 200, answer.text
        assert admin.get("/admin/models").json()["activeModel"] == QWEN
        time.sleep(4.0)  # several TTLs of idleness
        events = reader.drain(quiet=1.0)
    finally:
        reader.close()
        admin.close()
    unloaded = [d["modelKey"] for e, d in events if e == "model_idle_unloaded"]
    reloads = [d["modelKey"] for e, d in events if e == "model_switch_start"]
    assert sorted(unloaded) == [GEMMA, QWEN]  # each idle model once; no unload-reload cycle
    assert reloads == [QWEN]
    assert _emu_loaded(emu) == {QWEN}
    assert admin_active(gw) == QWEN


def admin_active(gw: ServerProcess) -> str | None:
    active: str | None = httpx.get(gw.url + "/admin/models", headers=admin_headers()).json()[
        "activeModel"
    ]
    return active


# -- the starvation cap --------------------------------------------------------------------------


def test_a_request_kept_waiting_by_a_busy_model_switches_after_the_cap_and_cuts_nothing(
    tmp_root: Path, started: list[ServerProcess]
) -> None:
    emu = start_emulator(
        tmp_root, "--parallel", "2", "--token-delay", "0.05", "--load-delay", "0.3", name="emu-cap"
    )
    started.append(emu)
    env = {
        **BASE,
        "LMGATE_ON_DEMAND_LOAD": "true",
        "LMGATE_MAX_LOADED_MODELS": "1",
        "LMGATE_MANAGE_ALL_MODELS": "true",
        "LMGATE_SWITCH_MAX_WAIT": "2",
    }
    gw = start_gateway(tmp_root, emu.url, env=env)
    started.append(gw)
    _synced(gw, QWEN)
    a = _client(gw, KEY_A)
    stop = threading.Event()
    a_done: list[Any] = []

    def keep_qwen_busy() -> None:
        while not stop.is_set():
            a_done.append(_chat(a, QWEN, 8))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        busy = [pool.submit(keep_qwen_busy) for _ in range(4)]
        _until(lambda: _emu_stats(emu)["generating"].get(QWEN, 0) >= 2)
        headers, text, finish, took = _chat(_client(gw, KEY_B), GEMMA, 3)
        stop.set()
        for f in busy:
            f.result()
    assert finish == "length" and text
    # Held by qwen's traffic up to the cap (2 s), then qwen drains (answers of 8 tokens at
    # 0.05 s) and gemma loads (0.3 s): well under the queue timeout, never before the cap.
    assert 1.5 < took < 15.0, took
    assert int(headers["x-queue-wait-ms"]) >= 1500
    assert all(r[2] == "length" and len(r[1].split()) == 8 for r in a_done)  # none cut off
    assert _emu_stats(emu)["busy_unloads"] == 0
