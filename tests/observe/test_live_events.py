"""`/debug/stream` against real servers: the event sequence and fields of chat, stream and
error requests, filters, resume, and a subscriber that never reads."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import httpx

from tests.observe.conftest import KEYS, client, key_name
from tests.observe.helpers import EventReader, eventually
from tests.servers import ADMIN_KEY, ServerProcess

MODEL = "qwen/qwen3-4b"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "tell me a story"}]}


def _direct_usage(direct: httpx.Client, body: dict[str, Any]) -> tuple[int, int]:
    usage = direct.post("/v1/chat/completions", json={**body, "stream": False}).json()["usage"]
    return usage["prompt_tokens"], usage["completion_tokens"]


def test_a_stream_reports_ttft_tokens_and_speed(
    observed: ServerProcess, direct: httpx.Client
) -> None:
    body = {**CHAT, "max_tokens": 9, "stream": True}
    reader = EventReader(observed.url, "?types=inference_*")
    try:
        reader.next("connected")
        with client(observed, KEYS[1]) as user:
            resp = user.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200
        rid = resp.headers["x-request-id"]
        start = reader.next("inference_start")
        done = reader.next("inference_complete")
        assert reader.drain(0.3) == []  # nothing failed
    finally:
        reader.close()
    assert start["requestId"] == done["requestId"] == rid and start["streaming"] is True
    assert done["status"] == 200 and done["streamed"] is True and done["endpoint"] == "chat"
    assert done["key"] == key_name(1) and done["client"] == "127.0.0.1"
    assert (done["tokensIn"], done["tokensOut"]) == _direct_usage(direct, body)
    assert 0 < done["ttftMs"] <= done["latencyMs"] == done["totalMs"]
    assert done["tokensPerSecond"] > 0 and done["error"] is None
    assert isinstance(done["timestamp"], float) and done["id"] > start["id"]


def test_failures_publish_inference_failed_and_error(observed: ServerProcess) -> None:
    reader = EventReader(observed.url, "?types=inference_failed,error")
    try:
        reader.next("connected")
        with client(observed, KEYS[1]) as user:
            missing = user.post("/v1/chat/completions", json={**CHAT, "model": "no/such-model"})
            broken = user.post(
                "/v1/chat/completions",
                json={**CHAT, "stream": True, "max_tokens": 8},
                headers={"x-emulator-fail": "mid-stream"},
            )
        assert missing.status_code >= 400 and broken.status_code == 200
        first = reader.next("inference_failed")
        assert first["status"] == missing.status_code and first["model"] == "no/such-model"
        assert first["message"] and first["requestId"] == missing.headers["x-request-id"]
        assert reader.next("error")["operation"] == "inference"
        second = reader.next("inference_failed")
        assert second["status"] == 200 and second["streamed"] is True  # broke after the start
        assert second["requestId"] == broken.headers["x-request-id"] and second["message"]
    finally:
        reader.close()


def test_type_globs_and_the_model_filter(observed: ServerProcess) -> None:
    reader = EventReader(observed.url, f"?types=inference_*&model={MODEL}")
    try:
        reader.next("connected")
        with client(observed, KEYS[1]) as user:
            user.post(
                "/v1/embeddings",
                json={"model": "text-embedding-nomic-embed-text-v1.5", "input": "x"},
            )
            user.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})
        seen = reader.drain(0.5)
    finally:
        reader.close()
    assert [event for event, _ in seen] == ["inference_start", "inference_complete"]
    assert {data["model"] for _, data in seen} == {MODEL}


def test_resume_replays_what_was_missed_in_order(observed: ServerProcess) -> None:
    reader = EventReader(observed.url, "?types=inference_complete")
    with client(observed, KEYS[1]) as user:
        try:
            reader.next("connected")
            user.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1})
            last_seen = reader.next("inference_complete")["id"]
        finally:
            reader.close()
        missed = [
            user.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1}).headers[
                "x-request-id"
            ]
            for _ in range(3)
        ]
    again = EventReader(observed.url, f"?types=inference_complete&lastEventId={last_seen}")
    try:
        replayed = [again.next("inference_complete") for _ in range(3)]
    finally:
        again.close()
    assert [e["requestId"] for e in replayed] == missed
    assert all(e["id"] > last_seen for e in replayed)


def test_startup_upstream_state_is_in_the_buffer(observed: ServerProcess) -> None:
    reader = EventReader(observed.url, "?types=upstream_state", headers={"Last-Event-ID": "0"})
    try:
        state = reader.next("upstream_state")
    finally:
        reader.close()
    assert state["reachable"] is True and state["capabilities"]["nativeV1"] is True


def _stalled_subscriber(port: int) -> socket.socket:
    """A client that reads the response head and then nothing at all."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    head = (
        f"GET /debug/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {ADMIN_KEY}\r\n\r\n"
    )
    sock.sendall(head.encode())
    received = b""
    while b"event: connected" not in received:
        received += sock.recv(1024)
    return sock


def _read_all(sock: socket.socket, quiet: float = 1.0) -> bytes:
    """Everything the gateway had sent, until nothing more comes for `quiet` seconds."""
    sock.settimeout(quiet)
    received = []
    while True:
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            return b"".join(received)
        if not data:
            return b"".join(received)
        received.append(data)


def test_a_subscriber_that_never_reads_slows_nothing_and_learns_what_it_lost(
    observed: ServerProcess, obs_admin: httpx.Client, obs_log: Path
) -> None:
    stalled = _stalled_subscriber(observed.port)
    watcher = EventReader(observed.url, f"?types=inference_complete&model={MODEL}")
    try:
        watcher.next("connected")
        # The kernel holds megabytes for a client that does not read, so a trickle of events
        # may all fit; a burst (LM Studio log lines are the cheapest events to make) comes
        # faster than the socket takes it and leaves the stalled subscriber far behind.
        before = obs_admin.get("/debug/metrics").json()["events"]
        with open(obs_log, "a", encoding="utf-8") as log:
            log.writelines(
                f"[2026-11-30 10:00:00][INFO] line {i} {'x' * 200}\n" for i in range(20000)
            )
        eventually(
            lambda: (
                obs_admin.get("/debug/metrics").json()["events"]["published"]
                >= before["published"] + 20000
            )
        )
        with client(observed, KEYS[2]) as user:
            statuses = [
                user.post("/v1/chat/completions", json={**CHAT, "max_tokens": 1}).status_code
                for _ in range(500)
            ]
        assert statuses == [200] * 500
        # a subscriber that reads got every one of them
        mine = [watcher.until("inference_complete", lambda e: e["key"] == key_name(2))]
        mine += [watcher.next("inference_complete") for _ in range(499)]
        assert all(e["key"] == key_name(2) for e in mine)
        after = obs_admin.get("/debug/metrics").json()["events"]
        assert after["dropped"] - before["dropped"] > 1000
        assert all(event != "events_lost" for event, _ in watcher.drain(0.2))
        notices = re.findall(
            rb'event: events_lost\ndata: \{"type":"events_lost","count":(\d+)', _read_all(stalled)
        )
        assert sum(int(n) for n in notices) > 1000
    finally:
        watcher.close()
        stalled.close()


def test_denials_are_published_without_the_key(observed: ServerProcess) -> None:
    wrong = "wrong-key-0123456789abcdef"
    reader = EventReader(observed.url, "?types=auth_denied")
    try:
        reader.next("connected")
        httpx.get(observed.url + "/v1/models", headers={"Authorization": f"Bearer {wrong}"})
        with client(observed, KEYS[1]) as user:
            user.get("/admin/state")
        bad_key = reader.next("auth_denied")
        no_scope = reader.next("auth_denied")
    finally:
        reader.close()
    assert bad_key["reason"] == "invalid_api_key" and bad_key["status"] == 401
    assert bad_key["address"] == "127.0.0.1" and bad_key["path"] == "/v1/models"
    assert bad_key["key"] is None and wrong not in str(bad_key)
    assert no_scope["status"] == 403 and no_scope["key"] == key_name(1)
    assert no_scope["requestId"] and no_scope["method"] == "GET"


def test_runtime_config_changes_are_published(observed: ServerProcess) -> None:
    reader = EventReader(observed.url, "?types=config_changed")
    with client(observed, ADMIN_KEY) as admin:
        try:
            reader.next("connected")
            body = {"modelKey": MODEL, "defaultInference": {"temperature": 0.3}}
            assert admin.post("/admin/models/activate", json=body).status_code == 200
            change = reader.until("config_changed", lambda e: e["what"] == "model_state")
        finally:
            reader.close()
            admin.post("/admin/models/unload", json={"modelKey": MODEL})
    assert change["changes"]["activeModel"] == {"from": None, "to": MODEL}
    assert change["changes"]["defaultInference"]["to"] == {"temperature": 0.3}
