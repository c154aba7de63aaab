"""LM Studio quirks: unknown endpoints, bad JSON, headers, version gating, token auth."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anthropic
import httpx
import openai
import pytest

if TYPE_CHECKING:
    from tests.emulator.conftest import Emulator

QWEN = "qwen/qwen3-4b"


def test_banner_names_version_and_address(emu: Emulator, emu_v03: Emulator) -> None:
    assert emu.banner == f"lmgate emulator (LM Studio 0.4) listening on {emu.url}"
    assert emu_v03.banner == f"lmgate emulator (LM Studio 0.3) listening on {emu_v03.url}"


async def test_unknown_endpoint_is_200_with_string_error(http: httpx.AsyncClient) -> None:
    response = await http.post("/chat/completions", json={})
    assert response.status_code == 200
    assert response.json() == {"error": "Unexpected endpoint or method. (POST /chat/completions)"}
    wrong_method = await http.get("/v1/chat/completions")
    assert wrong_method.json() == {
        "error": "Unexpected endpoint or method. (GET /v1/chat/completions)"
    }
    options = await http.options("/v1/models")
    assert options.status_code == 200 and "OPTIONS /v1/models" in options.json()["error"]
    count = await http.post("/v1/messages/count_tokens", json={})
    assert "Unexpected endpoint" in count.json()["error"]


async def test_routing_ignores_query_and_trailing_slash(http: httpx.AsyncClient) -> None:
    with_query = await http.get("/v1/models?client_version=0.133.0")
    assert len(with_query.json()["data"]) == 3
    assert len((await http.get("/v1/models/")).json()["data"]) == 3


async def test_routing_ignores_letter_case_but_parameters_keep_theirs(
    http: httpx.AsyncClient,
) -> None:
    """Express routes case-insensitively; a model id in the path is looked up as spelled."""
    assert len((await http.get("/V1/MODELS/")).json()["data"]) == 3
    assert "models" in (await http.get("/Api/V1/Models")).json()
    chat = await http.post(
        "/V1/Chat/Completions/",
        json={"model": QWEN, "messages": [{"role": "user", "content": "x"}]},
    )
    assert chat.json()["object"] == "chat.completion"
    assert (await http.get("/API/V0/MODELS/qwen/qwen3-4b")).json()["id"] == QWEN
    assert (await http.get("/api/v0/models/QWEN/QWEN3-4B")).status_code == 404


async def test_bad_json_and_express_headers(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"error": "Unexpected end of JSON input"}
    response = await http.post("/api/v1/chat", content=b"{nope}")
    assert response.status_code == 400 and "is not valid JSON" in response.json()["error"]
    greeting = await http.get("/lmstudio-greeting")
    assert greeting.json() == {"lmstudio": True}
    assert greeting.headers["x-powered-by"] == "Express"
    assert greeting.headers["content-type"] == "application/json; charset=utf-8"
    assert greeting.headers["etag"].startswith('W/"')
    assert "server" not in greeting.headers


def test_version_03_has_no_v1_rest_or_messages(emu_v03: Emulator) -> None:
    for path in ("/api/v1/models", "/api/v1/chat", "/v1/messages"):
        response = httpx.post(emu_v03.url + path, json={"model": QWEN})
        assert response.status_code == 404  # this instance runs with --unknown-status 404
        assert response.json() == {"error": f"Unexpected endpoint or method. (POST {path})"}
    body = {"model": QWEN, "input": "hello"}
    assert httpx.post(emu_v03.url + "/v1/responses", json=body).json()["status"] == "completed"
    chat = {"model": QWEN, "messages": [{"role": "user", "content": "x"}]}
    message = httpx.post(emu_v03.url + "/v1/chat/completions", json=chat).json()
    message = message["choices"][0]["message"]
    assert "reasoning_content" not in message and "tool_calls" not in message
    assert httpx.get(emu_v03.url + "/api/v0/models").json()["data"][0]["id"] == QWEN


async def test_token_auth(emu_auth: Emulator) -> None:
    token = emu_auth.token
    assert token is not None
    async with httpx.AsyncClient(base_url=emu_auth.url) as http:
        assert (await http.get("/lmstudio-greeting")).json() == {"lmstudio": True}
        missing = await http.get("/api/v1/models")
        assert missing.status_code == 401
        error = missing.json()["error"]
        assert error["type"] == "invalid_request" and error["code"] == "invalid_api_key"
        assert error["message"].startswith("An LM Studio API token is required")
        malformed = await http.get("/v1/models", headers={"Authorization": "Bearer lm-studio"})
        assert malformed.status_code == 401
        assert malformed.json()["error"]["message"].startswith("Malformed LM Studio API token")
        other = "sk-lm-Zz3dEf9h:Q1w2E3r4T5y6U7i8O9p0"
        wrong = await http.get("/v1/models", headers={"Authorization": f"Bearer {other}"})
        assert wrong.status_code == 401
        ok = await http.get("/api/v1/models", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200 and ok.json()["models"]
        via_key = await http.get("/v1/models", headers={"x-api-key": token})
        assert via_key.status_code == 200
        assert (await http.get("/__emulator/stats")).status_code == 200

    async with openai.AsyncOpenAI(base_url=emu_auth.url + "/v1", api_key="bad", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError):
            await c.models.list()
    async with openai.AsyncOpenAI(base_url=emu_auth.url + "/v1", api_key=token, max_retries=0) as c:
        assert len((await c.models.list()).data) == 3
    async with anthropic.AsyncAnthropic(base_url=emu_auth.url, api_key=token, max_retries=0) as a:
        reply = await a.messages.create(
            model=QWEN, max_tokens=3, messages=[{"role": "user", "content": "x"}]
        )
        assert reply.usage.output_tokens == 3
