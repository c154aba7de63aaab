"""The debug API: live events over SSE, status, metrics, Prometheus, request ids and log lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.observe.helpers import EventReader, eventually
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess, admin_headers, start_gateway

CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "events please"}]}


@pytest.fixture
def events(gateway: ServerProcess) -> Iterator[EventReader]:
    reader = EventReader(gateway.url)
    reader.next("connected")
    yield reader
    reader.close()


def test_inference_events_carry_the_request_id(events: EventReader, user: httpx.Client) -> None:
    resp = user.post("/v1/chat/completions", json=CHAT, headers={"X-Request-ID": "req-abc.123"})
    assert resp.headers["x-request-id"] == "req-abc.123"
    start = events.next("inference_start")
    done = events.next("inference_complete")
    for event in (start, done):
        assert event["requestId"] == "req-abc.123"
        assert event["path"] == "/v1/chat/completions"
        assert event["model"] == "qwen/qwen3-4b"
        assert isinstance(event["id"], int) and event["timestamp"]
    assert done["status"] == 200 and isinstance(done["totalMs"], float)
    assert done["key"] == "api-key-1"


def test_errors_are_published(events: EventReader, user: httpx.Client) -> None:
    user.post("/v1/chat/completions", json={**CHAT, "model": "missing/model"})
    error = events.next("error")
    assert error["operation"] == "inference" and error["message"]


@pytest.mark.usefixtures("no_active_model")
def test_model_events(events: EventReader, admin: httpx.Client) -> None:
    admin.post("/admin/models/load", json={"modelKey": "qwen/qwen3-4b"})
    assert events.next("model_load_start")["modelKey"] == "qwen/qwen3-4b"
    assert events.next("model_load_complete")["modelKey"] == "qwen/qwen3-4b"
    assert events.next("model_activate")["modelKey"] == "qwen/qwen3-4b"
    admin.post("/admin/models/unload", json={"modelKey": "qwen/qwen3-4b"})
    assert events.next("model_unload_start")["modelKey"] == "qwen/qwen3-4b"
    assert events.next("model_unload_complete")["wasActive"] is True


def test_type_filter_and_resume(gateway: ServerProcess, user: httpx.Client) -> None:
    reader = EventReader(gateway.url, "?types=inference_complete")
    try:
        reader.next("connected")
        user.post("/v1/chat/completions", json=CHAT)
        first = reader.next("inference_complete")
        assert reader.items.empty()  # no inference_start got through the filter
    finally:
        reader.close()
    user.post("/v1/chat/completions", json=CHAT)
    resumed = httpx.Client(timeout=None)
    try:
        with resumed.stream(
            "GET",
            gateway.url + "/debug/stream?types=inference_complete",
            headers={**admin_headers(), "Last-Event-ID": str(first["id"])},
        ) as resp:
            lines = resp.iter_lines()
            replayed = None
            for line in lines:
                if line.startswith("data: ") and "inference_complete" in line:
                    replayed = json.loads(line[6:])
                    break
        assert replayed is not None and int(replayed["id"]) > int(str(first["id"]))
    finally:
        resumed.close()


def test_keep_alive_comments_and_the_batch_setting(tmp_root: Path, emulator: ServerProcess) -> None:
    env = {"LMGATE_KEEPALIVE_SECONDS": "0.3", "LMGATE_DEBUG_STREAM_BATCH_MS": "0"}
    gw = start_gateway(tmp_root, emulator.url, env={"LMGATE_ADMIN_KEY": ADMIN_KEY, **env})
    reader = EventReader(gw.url)
    try:
        assert reader.next("connected")["batchMs"] == 0  # each event written as it comes
        assert reader.comments.get(timeout=5) == ": keep-alive"
    finally:
        reader.close()
        gw.stop()


def test_status_and_metrics(admin: httpx.Client, user: httpx.Client) -> None:
    user.post("/v1/chat/completions", json=CHAT)
    user.post("/v1/chat/completions", json={**CHAT, "model": "missing/model"})
    status = admin.get("/debug/status").json()
    assert set(status) >= {
        "status",
        "currentOperation",
        "activeModel",
        "recentRequests",
        "totalRequests",
        "totalErrors",
    }
    assert len(status["recentRequests"]) <= 10 and status["totalErrors"] >= 1
    metrics = admin.get("/debug/metrics").json()
    perf = metrics["performance"]
    assert perf["totalRequests"] >= 2 and 0 < perf["errorRate"] < 1
    assert perf["minResponseTime"] <= perf["medianResponseTime"] <= perf["maxResponseTime"]
    assert metrics["system"]["uptime"] > 0
    assert set(metrics) >= {"modelInfo", "performance", "recentActivity", "system"}
    prom = admin.get("/metrics")
    assert prom.headers["content-type"].startswith("text/plain")
    assert 'lmgate_requests_total{route="chat",status="200"}' in prom.text
    assert "lmgate_request_duration_seconds_bucket" in prom.text


def test_request_ids(user: httpx.Client) -> None:
    generated = user.get("/v1/models").headers["x-request-id"]
    assert len(generated) == 32
    bad = user.get("/v1/models", headers={"X-Request-ID": "bad id\twith spaces"})
    assert bad.headers["x-request-id"] != "bad id\twith spaces"


def test_one_json_log_line_per_request(gateway: ServerProcess, user: httpx.Client) -> None:
    user.post("/v1/chat/completions", json=CHAT, headers={"X-Request-ID": "log-line-check"})
    eventually(lambda: "log-line-check" in gateway.logs())  # written as the exchange finishes
    lines = [
        json.loads(line)
        for line in gateway.logs().splitlines()
        if line.startswith("{") and "log-line-check" in line
    ]
    assert len(lines) == 1
    line = lines[0]
    assert line["client"] == "127.0.0.1" and line["key"] == "api-key-1"
    assert line["method"] == "POST" and line["status"] == 200
    assert line["model"] == "qwen/qwen3-4b" and line["streamed"] is False
    assert isinstance(line["latency_ms"], float)
    assert API_KEY not in json.dumps(line)
