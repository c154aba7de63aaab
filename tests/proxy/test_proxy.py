"""The transparent proxy, against the emulator, through a real gateway process."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import (
    ADMIN_KEY,
    API_KEY,
    ServerProcess,
    free_port,
    start_emulator,
    start_gateway,
    upstream_requests,
)

CHAT = {"messages": [{"role": "user", "content": "Say hello to the gateway"}]}


def _last(upstream: httpx.Client, path: str) -> dict[str, object]:
    matching = [r for r in upstream_requests(upstream) if r["path"] == path]
    assert matching, f"the upstream never saw {path}"
    return matching[-1]


def test_models_listing_is_relayed_unchanged(user: httpx.Client, upstream: httpx.Client) -> None:
    through = user.get("/v1/models")
    direct = upstream.get("/v1/models")
    assert through.status_code == 200
    assert through.json() == direct.json()
    assert through.headers["x-powered-by"] == "Express"


def test_headers_query_and_credentials(
    user: httpx.Client, upstream: httpx.Client, emulator: ServerProcess
) -> None:
    resp = user.get(
        "/v1/models",
        params={"client_version": "1.2"},
        headers={"x-custom": "kept", "Connection": "keep-alive, x-hop", "x-hop": "dropped"},
    )
    assert resp.status_code == 200
    seen = _last(upstream, "/v1/models")
    headers = seen["headers"]
    assert isinstance(headers, dict)
    assert headers["x-custom"] == "kept"
    assert "x-hop" not in headers
    assert "authorization" not in headers and "x-api-key" not in headers
    assert headers["host"] == f"127.0.0.1:{emulator.port}"
    assert "client_version=1.2" in str(seen["query"])


def test_upstream_token_replaces_client_key(tmp_root: Path) -> None:
    secured = start_emulator(tmp_root, "--api-token", "sk-lm-Ab3dEf9h:Q1w2E3r4T5y6U7i8O9p0")
    gw = start_gateway(
        tmp_root,
        secured.url,
        env={
            "LMGATE_API_KEYS": API_KEY,
            "LMGATE_UPSTREAM_TOKEN": "sk-lm-Ab3dEf9h:Q1w2E3r4T5y6U7i8O9p0",
        },
    )
    try:
        resp = httpx.get(gw.url + "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
        assert resp.status_code == 200, resp.text
        with httpx.Client(base_url=secured.url) as up:
            seen = _last(up, "/v1/models")
        assert seen["headers"]["authorization"] == "Bearer sk-lm-Ab3dEf9h:Q1w2E3r4T5y6U7i8O9p0"  # type: ignore[index]
        direct = httpx.get(secured.url + "/v1/models")
        assert direct.status_code == 401
    finally:
        gw.stop()
        secured.stop()


@pytest.mark.usefixtures("no_active_model")
def test_body_passes_unchanged_when_nothing_is_active(
    user: httpx.Client, upstream: httpx.Client
) -> None:
    raw = b'{"messages":[{"role":"user","content":"hi"}],   "max_tokens": 3}'
    resp = user.post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
    )
    # LM Studio answers a request without a model with the loaded one: nothing was added.
    assert resp.status_code == 200, resp.text
    assert _last(upstream, "/v1/chat/completions")["body"] == json.loads(raw)


@pytest.mark.usefixtures("no_active_model")
def test_model_and_defaults_are_injected(
    admin: httpx.Client, user: httpx.Client, upstream: httpx.Client
) -> None:
    defaults = {
        "temperature": 0.3,
        "maxTokens": 7,
        "topP": 0.8,
        "topK": 20,
        "repeatPenalty": 1.2,
        "stopStrings": ["\n\n"],
    }
    r = admin.post(
        "/admin/models/activate",
        json={"modelKey": "qwen/qwen3-4b", "defaultInference": defaults},
    )
    assert r.status_code == 200, r.text
    resp = user.post("/v1/chat/completions", json={**CHAT, "temperature": None, "top_k": 5})
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["completion_tokens"] <= 7
    body = _last(upstream, "/v1/chat/completions")["body"]
    assert body == {
        **CHAT,
        "model": "qwen/qwen3-4b",
        "temperature": None,
        "top_k": 5,
        "max_tokens": 7,
        "top_p": 0.8,
        "repeat_penalty": 1.2,
        "stop": ["\n\n"],
    }
    user.post("/v1/messages", json={"messages": CHAT["messages"]})
    anthropic_body = _last(upstream, "/v1/messages")["body"]
    assert anthropic_body["max_tokens"] == 7  # type: ignore[index]
    assert anthropic_body["stop_sequences"] == ["\n\n"]  # type: ignore[index]
    assert "repeat_penalty" not in anthropic_body  # type: ignore[operator]
    user.post("/v1/responses", json={"input": "hi"})
    assert _last(upstream, "/v1/responses")["body"]["max_output_tokens"] == 7  # type: ignore[index]
    user.post(
        "/v1/embeddings", json={"input": "x", "model": "text-embedding-nomic-embed-text-v1.5"}
    )
    emb = _last(upstream, "/v1/embeddings")["body"]
    assert emb == {"input": "x", "model": "text-embedding-nomic-embed-text-v1.5"}


def test_shorthand_routes(user: httpx.Client, upstream: httpx.Client) -> None:
    assert user.get("/models").status_code == 200
    assert _last(upstream, "/v1/models")
    resp = user.post("/chat/completions", json={**CHAT, "model": "qwen/qwen3-4b"})
    assert resp.status_code == 200
    assert _last(upstream, "/v1/chat/completions")


def test_native_api_is_proxied(user: httpx.Client, admin: httpx.Client) -> None:
    v0 = user.get("/api/v0/models")
    assert v0.status_code == 200
    assert any(m["id"] == "qwen/qwen3-4b" for m in v0.json()["data"])
    assert user.get("/api/v1/models").status_code == 200
    denied = user.post("/api/v1/models/load", json={"model": "google/gemma-3-1b"})
    assert denied.status_code == 403
    assert denied.json()["error"]["type"] == "permission_error"
    loaded = admin.post("/api/v1/models/load", json={"model": "google/gemma-3-1b"})
    assert loaded.status_code == 200, loaded.text
    instance = loaded.json()["instance_id"]
    assert admin.post("/api/v1/models/unload", json={"instance_id": instance}).status_code == 200


def test_upstream_errors_pass_through_unchanged(user: httpx.Client) -> None:
    resp = user.post("/v1/chat/completions", json={**CHAT, "model": "no/such-model"})
    assert resp.status_code in (400, 404)
    assert resp.json()["error"]["code"] == "model_not_found"
    failing = user.post(
        "/v1/chat/completions",
        json={**CHAT, "model": "qwen/qwen3-4b"},
        headers={"x-emulator-fail": "500"},
    )
    assert failing.status_code == 500
    unknown = user.get("/v1/nothing-here")
    assert unknown.status_code == 200  # LM Studio's own quirk, relayed as is
    assert "Unexpected endpoint" in unknown.json()["error"]


def _stream_times(client: httpx.Client, delay: float, tokens: int) -> tuple[list[float], float]:
    started = time.perf_counter()
    arrivals = []
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={**CHAT, "model": "qwen/qwen3-4b", "stream": True, "max_tokens": tokens},
        headers={"x-emulator-token-delay": str(delay)},
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.perf_counter() - started)
    return arrivals, time.perf_counter() - started


def test_stream_is_relayed_as_it_arrives(user: httpx.Client) -> None:
    arrivals, total = _stream_times(user, 0.25, 6)
    assert len(arrivals) >= 7  # tokens + finish chunk (+ [DONE])
    # The first token must not wait for the last: buffering would deliver all at once.
    assert total - arrivals[0] > 1.0
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(1 for g in gaps if g > 0.15) >= 4  # the upstream's pacing survives


def test_stream_chunks_equal_direct(user: httpx.Client, emulator: ServerProcess) -> None:
    body = {**CHAT, "model": "qwen/qwen3-4b", "stream": True, "max_tokens": 12}
    with httpx.Client(base_url=emulator.url) as direct:
        want = direct.post("/v1/chat/completions", json=body).text
    got = user.post("/v1/chat/completions", json=body).text

    def contents(text: str) -> list[str]:
        out = []
        for line in text.splitlines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:]).get("choices", []):
                    out.append(choice.get("delta", {}).get("content") or "")
        return out

    assert contents(got) == contents(want)
    assert got.rstrip().endswith("data: [DONE]")


def _stats(upstream: httpx.Client) -> dict[str, int]:
    stats: dict[str, int] = upstream.get("/__emulator/stats").json()
    return stats


def test_client_disconnect_stops_the_upstream(user: httpx.Client, upstream: httpx.Client) -> None:
    before = _stats(upstream)["cancelled_streams"]
    with user.stream(
        "POST",
        "/v1/chat/completions",
        json={**CHAT, "model": "qwen/qwen3-4b", "stream": True, "max_tokens": 200},
        headers={"x-emulator-token-delay": "0.1"},
    ) as resp:
        lines = resp.iter_lines()
        next(line for line in lines if line.startswith("data: "))
    # The client hung up after one chunk; the emulator must see its stream end early.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = _stats(upstream)
        if stats["cancelled_streams"] > before and stats["active_streams"] == 0:
            break
        time.sleep(0.05)
    stats = _stats(upstream)
    assert stats["cancelled_streams"] == before + 1
    assert stats["active_streams"] == 0


def test_bad_input_gets_clear_errors_and_breaks_nothing(user: httpx.Client) -> None:
    results: list[str] = []

    def long_stream() -> None:
        with user.stream(
            "POST",
            "/v1/chat/completions",
            json={**CHAT, "model": "qwen/qwen3-4b", "stream": True, "max_tokens": 20},
            headers={"x-emulator-token-delay": "0.05"},
        ) as resp:
            results.extend(line for line in resp.iter_lines() if line.startswith("data: "))

    worker = threading.Thread(target=long_stream)
    worker.start()
    bad = [
        (b"{not json", "invalid_json"),
        (b"[1, 2, 3]", "invalid_json"),
        (b"", "invalid_json"),
        (b'"text"', "invalid_json"),
    ]
    for raw, code in bad:
        resp = user.post(
            "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        )
        assert resp.status_code == 400
        error = resp.json()["error"]
        assert error["code"] == code and error["type"] == "invalid_request_error"
        assert error["message"]
    worker.join(timeout=30)
    # the other client's stream was not disturbed: every token, the finish, and [DONE]
    assert len(results) == 22 and results[-1] == "data: [DONE]"


def test_body_limit(tmp_root: Path, emulator: ServerProcess) -> None:
    gw = start_gateway(tmp_root, emulator.url, env={"LMGATE_MAX_BODY_BYTES": "1000"})
    try:
        big = {"messages": [{"role": "user", "content": "x" * 5000}], "model": "qwen/qwen3-4b"}
        resp = httpx.post(gw.url + "/v1/chat/completions", json=big)
        assert resp.status_code == 413
        assert resp.json()["error"]["code"] == "request_too_large"
        assert httpx.get(gw.url + "/v1/models").status_code == 200
    finally:
        gw.stop()


@pytest.fixture
def silent_upstream() -> Iterator[str]:
    """Accepts connections and never answers: a hung upstream."""
    import socket

    port = free_port()
    server = socket.socket()
    server.bind(("127.0.0.1", port))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def garbage_upstream() -> Iterator[str]:
    """Answers every request with bytes that are not HTTP."""
    import socket

    port = free_port()
    server = socket.socket()
    server.bind(("127.0.0.1", port))
    server.listen(16)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"this is not http at all\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    stop.set()
    thread.join()
    server.close()


@pytest.mark.parametrize(
    ("which", "status", "code"),
    [
        ("closed", 503, "upstream_unavailable"),
        ("silent", 504, "upstream_timeout"),
        ("garbage", 502, "upstream_error"),
    ],
)
def test_upstream_failures(
    which: str,
    status: int,
    code: str,
    tmp_root: Path,
    silent_upstream: str,
    garbage_upstream: str,
) -> None:
    url = {
        "closed": f"http://127.0.0.1:{free_port()}",
        "silent": silent_upstream,
        "garbage": garbage_upstream,
    }[which]
    gw = start_gateway(tmp_root, url, env={"LMGATE_REQUEST_TIMEOUT": "0.5"})
    try:
        resp = httpx.post(gw.url + "/v1/chat/completions", json={**CHAT, "model": "m"}, timeout=10)
        assert resp.status_code == status
        error = resp.json()["error"]
        assert error["code"] == code
        assert url in error["message"]
        assert httpx.get(gw.url + "/health").status_code == 200
        assert httpx.get(gw.url + "/ready").status_code == 503
    finally:
        gw.stop()


def test_ready_when_upstream_answers(gateway: ServerProcess) -> None:
    resp = httpx.get(gateway.url + "/ready", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert resp.status_code == 200
    assert resp.json()["status"] == "ready"
