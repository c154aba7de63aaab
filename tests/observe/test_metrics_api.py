"""`/debug/metrics` and `/metrics` add up to a known request mix, on a gateway of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.observe.conftest import KEYS, SETTINGS, client, key_name
from tests.observe.helpers import eventually
from tests.servers import ADMIN_KEY, ServerProcess, start_gateway

QWEN = "qwen/qwen3-4b"
EMBED = "text-embedding-nomic-embed-text-v1.5"
USER = [{"role": "user", "content": "what is the time"}]


@pytest.fixture(scope="module")
def mixed(
    tmp_root: Path, obs_emulator: ServerProcess
) -> Iterator[tuple[ServerProcess, dict[str, Any]]]:
    """A fresh gateway that served: 3 chats, 2 streamed chats, 1 unknown model, 1 embedding."""
    gw = start_gateway(tmp_root, obs_emulator.url, env=SETTINGS)
    known: dict[str, Any] = {"in": 0, "out": 0}
    with client(gw, KEYS[1]) as user:
        for _ in range(3):
            body = user.post(
                "/v1/chat/completions", json={"model": QWEN, "messages": USER, "max_tokens": 4}
            ).json()
            known["in"] += body["usage"]["prompt_tokens"]
            known["out"] += body["usage"]["completion_tokens"]
        for _ in range(2):
            with user.stream(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": QWEN,
                    "messages": USER,
                    "max_tokens": 6,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            ) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data: {") and '"usage"' in line:
                        usage = json.loads(line[6:])["usage"]
                        known["in"] += usage["prompt_tokens"]
                        known["out"] += usage["completion_tokens"]
        missing = user.post("/v1/chat/completions", json={"model": "no/such", "messages": USER})
        known["error_status"] = str(missing.status_code)
        user.post("/v1/embeddings", json={"model": EMBED, "input": "x"})
    yield gw, known
    gw.stop()


def test_debug_metrics_add_up(mixed: tuple[ServerProcess, dict[str, Any]]) -> None:
    gw, known = mixed
    with client(gw, ADMIN_KEY) as admin:
        metrics = admin.get("/debug/metrics").json()
        assert metrics["usage"]["enabled"] is True
        eventually(lambda: admin.get("/debug/metrics").json()["usage"]["writtenRows"] == 7)
    assert set(metrics) >= {"modelInfo", "performance", "recentActivity", "system"}
    assert metrics["performance"]["totalRequests"] == metrics["requestsTotal"] == 7
    assert metrics["errorsTotal"] == 1 and metrics["inFlight"] == 0
    assert metrics["upstream"]["reachable"] is True and metrics["upstream"]["capabilities"]
    for name in ("1m", "15m", "sinceStart"):
        window = metrics["windows"][name]
        assert window["requests"] == 7 and window["errors"] == 1
        assert abs(window["errorRate"] - 1 / 7) < 1e-3
        assert window["byEndpoint"]["chat"]["requests"] == 6
        assert window["byEndpoint"]["embeddings"]["requests"] == 1
        assert set(window["byStatus"]) == {"200", known["error_status"]}
        assert window["byStatus"]["200"]["requests"] == 6
        assert window["byKey"][key_name(1)]["requests"] == 7
        qwen = window["byModel"][QWEN]
        assert qwen["requests"] == 5 and qwen["errors"] == 0
        assert (qwen["tokensIn"], qwen["tokensOut"]) == (known["in"], known["out"])
        assert qwen["tokensPerSecond"] > 0
        assert qwen["ttftMs"]["p50"] is not None  # two streams
        assert window["byModel"][EMBED]["ttftMs"]["p50"] is None
        latency = window["latencyMs"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, frozenset(sample.labels.items())] = sample.value
    return out


def test_prometheus_adds_up(mixed: tuple[ServerProcess, dict[str, Any]]) -> None:
    gw, known = mixed
    with client(gw, ADMIN_KEY) as admin:
        resp = admin.get("/metrics")
    assert resp.headers["content-type"].startswith("text/plain")
    got = _samples(resp.text)

    def value(name: str, **labels: str) -> float:
        return got[name, frozenset(labels.items())]

    who = {"key": key_name(1)}
    chat = {"endpoint": "chat", "model": QWEN}
    assert value("lmgate_inference_requests_total", **chat, **who, status="200") == 5
    assert (
        value(
            "lmgate_inference_requests_total",
            endpoint="chat",
            model="no/such",
            **who,
            status=known["error_status"],
        )
        == 1
    )
    assert value("lmgate_inference_duration_seconds_count", **chat) == 5
    assert value("lmgate_inference_duration_seconds_bucket", **chat, le="+Inf") == 5
    assert value("lmgate_time_to_first_token_seconds_count", **chat) == 2
    assert value("lmgate_tokens_total", model=QWEN, **who, direction="in") == known["in"]
    assert value("lmgate_tokens_total", model=QWEN, **who, direction="out") == known["out"]
    assert value("lmgate_output_tokens_per_second_count", model=QWEN) == 5
    assert value("lmgate_requests_total", route="chat", status="200") == 5
    assert value("lmgate_events_total", type="inference_complete") == 7
    assert value("lmgate_events_total", type="inference_failed") == 1
    assert value("lmgate_upstream_up") == 1
    assert value("lmgate_debug_subscribers") == 0


def test_metrics_need_the_admin_scope(mixed: tuple[ServerProcess, dict[str, Any]]) -> None:
    gw, _ = mixed
    with client(gw, KEYS[1]) as user:
        assert user.get("/metrics").status_code == 403
        assert user.get("/debug/metrics").status_code == 403
