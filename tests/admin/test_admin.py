"""Admin model state: activate, load, unload, state; validation; persistence across restarts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.servers import ADMIN_KEY, ServerProcess, admin_headers, start_gateway

pytestmark = pytest.mark.usefixtures("no_active_model")


def test_activate_and_state(admin: httpx.Client) -> None:
    resp = admin.post(
        "/admin/models/activate",
        json={"modelKey": "qwen/qwen3-4b", "defaultInference": {"temperature": 0.1}},
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "activated" and body["message"]
    assert body["modelKey"] == "qwen/qwen3-4b"
    assert body["defaultInference"] == {"temperature": 0.1}
    state = admin.get("/admin/state").json()
    assert state["activeModel"] == "qwen/qwen3-4b"
    assert state["defaultInference"] == {"temperature": 0.1}


def test_load_stores_config_and_answers_with_the_workflow(admin03: httpx.Client) -> None:
    """LM Studio 0.3 cannot load over HTTP: the intent is stored, the steps are spelled out."""
    admin = admin03
    load_config = {
        "contextLength": 8192,
        "gpu": {"ratio": 0.5, "layers": 20},
        "cpuThreads": 4,
        "ropeFrequencyBase": 10000.0,
        "ropeFrequencyScale": 1.0,
        "flashAttention": True,
        "evalBatchSize": 512,
        "ttl": 600,
    }
    resp = admin.post(
        "/admin/models/load",
        json={
            "modelKey": "google/gemma-3-1b",
            "loadConfig": load_config,
            "defaultInference": {"maxTokens": -1, "stopStrings": ["END"], "stream": False},
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "activated"
    assert body["workflow"]["step1"] == "Load the model manually in LM Studio UI"
    assert "contextLength = 8192" in body["workflow"]["step2"]
    assert "gpu.ratio = 0.5" in body["workflow"]["step2"]
    state = admin.get("/admin/state").json()
    assert state["activeModel"] == "google/gemma-3-1b"
    assert state["loadConfigs"]["google/gemma-3-1b"] == load_config
    # activate again without defaults keeps the model's stored ones
    admin.post("/admin/models/activate", json={"modelKey": "google/gemma-3-1b"})
    assert admin.get("/admin/state").json()["defaultInference"]["stopStrings"] == ["END"]


def test_load_without_activation(admin03: httpx.Client) -> None:
    admin = admin03
    resp = admin.post(
        "/admin/models/load",
        json={
            "modelKey": "qwen/qwen3-4b",
            "activate": False,
            "loadConfig": {"contextLength": 4096},
        },
    )
    assert resp.json()["status"] == "stored"
    state = admin.get("/admin/state").json()
    assert state["activeModel"] is None
    assert state["loadConfigs"]["qwen/qwen3-4b"] == {"contextLength": 4096}


def test_unload_clears_the_active_model(admin03: httpx.Client) -> None:
    admin = admin03
    admin.post("/admin/models/activate", json={"modelKey": "qwen/qwen3-4b"})
    other = admin.post("/admin/models/unload", json={"modelKey": "google/gemma-3-1b"}).json()
    assert other["status"] == "cleared" and other["wasActive"] is False
    assert admin.get("/admin/state").json()["activeModel"] == "qwen/qwen3-4b"
    resp = admin.post("/admin/models/unload", json={"modelKey": "qwen/qwen3-4b"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "cleared" and body["wasActive"] is True
    assert body["workflow"]["step1"] == "Unload the model manually in LM Studio UI"
    assert admin.get("/admin/state").json()["activeModel"] is None


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/admin/models/activate",
            {"modelKey": "m", "defaultInference": {"temperature": 2.5}},
            "defaultInference.temperature",
        ),
        (
            "/admin/models/activate",
            {"modelKey": "m", "defaultInference": {"maxTokens": 0}},
            "defaultInference.maxTokens",
        ),
        (
            "/admin/models/activate",
            {"modelKey": "m", "defaultInference": {"topP": 1.5}},
            "defaultInference.topP",
        ),
        (
            "/admin/models/activate",
            {"modelKey": "m", "defaultInference": {"topK": -1}},
            "defaultInference.topK",
        ),
        (
            "/admin/models/activate",
            {"modelKey": "m", "defaultInference": {"repeatPenalty": 0}},
            "defaultInference.repeatPenalty",
        ),
        (
            "/admin/models/activate",
            {"modelKey": "m", "defaultInference": {"stopStrings": "x"}},
            "defaultInference.stopStrings",
        ),
        (
            "/admin/models/activate",
            {"modelKey": "m", "defaultInference": {"stream": "maybe"}},
            "defaultInference.stream",
        ),
        ("/admin/models/activate", {"modelKey": "m", "surprise": 1}, "surprise"),
        ("/admin/models/activate", {}, "modelKey"),
        ("/admin/models/activate", {"modelKey": ""}, "modelKey"),
        (
            "/admin/models/load",
            {"modelKey": "m", "loadConfig": {"gpu": {"ratio": 2}}},
            "loadConfig.gpu.ratio",
        ),
        (
            "/admin/models/load",
            {"modelKey": "m", "loadConfig": {"contextLength": -5}},
            "loadConfig.contextLength",
        ),
        (
            "/admin/models/load",
            {"modelKey": "m", "loadConfig": {"evalBatchSize": 2**70}},
            "loadConfig.evalBatchSize",
        ),
        (
            "/admin/models/activate",
            {"modelKey": "m", "defaultInference": {"maxTokens": 2**64}},
            "defaultInference.maxTokens",
        ),
        ("/admin/models/unload", {"model": "m"}, "model"),
    ],
)
def test_validation_errors(admin: httpx.Client, path: str, body: object, param: str) -> None:
    resp = admin.post(path, json=body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"].startswith(param)


@pytest.mark.parametrize("raw", [b"{oops", b"[]", b"42", b""])
def test_malformed_bodies(admin: httpx.Client, raw: bytes) -> None:
    resp = admin.post(
        "/admin/models/activate", content=raw, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert set(resp.json()["error"]) >= {"message", "type", "code"}


def test_a_form_content_type_is_refused(admin: httpx.Client) -> None:
    """`curl -d` without `-H 'Content-Type: application/json'` sends a form type, which any web
    page can send too: admin bodies must say they are JSON."""
    resp = admin.post(
        "/admin/models/activate",
        content=b'{"modelKey": "qwen/qwen3-4b"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 415
    assert "Content-Type: application/json" in resp.json()["error"]["message"]


def test_unknown_admin_route_is_openai_shaped(admin: httpx.Client) -> None:
    resp = admin.get("/admin/nothing")
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "not_found"
    wrong_method = admin.get("/admin/models/activate")
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()


def test_state_survives_a_restart(tmp_root: Path, emulator: ServerProcess) -> None:
    data = tmp_root / "persist"
    env = {"LMGATE_ADMIN_KEY": ADMIN_KEY}
    first = start_gateway(tmp_root, emulator.url, env=env, data_dir=data)
    try:
        resp = httpx.post(
            first.url + "/admin/models/load",
            headers=admin_headers(),
            json={
                "modelKey": "qwen/qwen3-4b",
                "loadConfig": {"contextLength": 2048},
                "defaultInference": {"temperature": 0.4, "maxTokens": 9},
            },
        )
        assert resp.status_code == 200
    finally:
        first.stop()
    second = start_gateway(tmp_root, emulator.url, env=env, data_dir=data)
    try:
        state = httpx.get(second.url + "/admin/state", headers=admin_headers()).json()
        assert state["activeModel"] == "qwen/qwen3-4b"
        assert state["defaultInference"] == {"temperature": 0.4, "maxTokens": 9}
        assert state["loadConfigs"]["qwen/qwen3-4b"] == {"contextLength": 2048}
        with httpx.Client(base_url=emulator.url) as up:
            up.delete("/__emulator/requests")
            httpx.post(
                second.url + "/v1/chat/completions",
                headers=admin_headers(),
                json={"messages": [{"role": "user", "content": "hi"}]},
            )
            from tests.servers import upstream_requests

            body = [r for r in upstream_requests(up) if r["path"] == "/v1/chat/completions"][-1][
                "body"
            ]
        assert body["model"] == "qwen/qwen3-4b" and body["max_tokens"] == 9  # type: ignore[index]
    finally:
        second.stop()
