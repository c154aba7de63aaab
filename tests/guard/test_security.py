"""Security basics against a real gateway: keys, scopes, path spellings, allowlists, logs."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.servers import (
    ADMIN_KEY,
    API_KEY,
    ServerProcess,
    raw_status,
    start_gateway,
)


def test_health_is_public_everything_else_needs_a_key(gateway: ServerProcess) -> None:
    assert httpx.get(gateway.url + "/health").status_code == 200
    for path in ("/v1/models", "/ready", "/admin/state", "/debug/status", "/metrics", "/x"):
        resp = httpx.get(gateway.url + path)
        assert resp.status_code == 401, path
        error = resp.json()["error"]
        assert error["type"] == "authentication_error" and error["code"] == "missing_api_key"


def test_wrong_key_is_401(gateway: ServerProcess) -> None:
    resp = httpx.get(gateway.url + "/v1/models", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_api_key"
    basic = httpx.get(gateway.url + "/v1/models", headers={"Authorization": f"Basic {API_KEY}"})
    assert basic.status_code == 401


def test_both_header_styles(gateway: ServerProcess) -> None:
    assert httpx.get(gateway.url + "/v1/models", headers={"x-api-key": API_KEY}).status_code == 200
    assert httpx.get(gateway.url + "/v1/models", headers={"X-API-Key": API_KEY}).status_code == 200
    second = {"Authorization": "Bearer second-key-abcdef"}
    assert httpx.get(gateway.url + "/v1/models", headers=second).status_code == 200


def test_inference_key_cannot_reach_admin(gateway: ServerProcess) -> None:
    user = {"Authorization": f"Bearer {API_KEY}"}
    for path in ("/admin/state", "/debug/status", "/metrics"):
        resp = httpx.get(gateway.url + path, headers=user)
        assert resp.status_code == 403, path
        assert resp.json()["error"]["type"] == "permission_error"
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.get(gateway.url + "/admin/state", headers=admin).status_code == 200
    assert httpx.get(gateway.url + "/v1/models", headers=admin).status_code == 200


ATTACK_PATHS = [
    "//admin/state",
    "/./admin/state",
    "/v1/../admin/state",
    "/v1/%2e%2e/admin/state",
    "/v1%2f..%2fadmin/state",
    "/%61dmin/state",
    "/%2561dmin/state",
    "/ADMIN/state",
    "/Admin/State",
    "/debug/../debug/status",
    "/v1\\..\\admin\\state",
    "/api/v1/models/%6coad",
    "/api/v1/models//load",
    "/api/v1/./models/load",
    "/API/V1/MODELS/LOAD",
    "/v1/../api/v1/models/unload",
    "/api/v1/models/download",
    "/api/v1/models/load/",
    "/metrics/",
]


@pytest.mark.parametrize("path", ATTACK_PATHS)
def test_no_spelling_reaches_admin_with_an_inference_key(gateway: ServerProcess, path: str) -> None:
    method = "POST" if "models" in path.lower() else "GET"
    status = raw_status(gateway.port, method, path, {"Authorization": f"Bearer {API_KEY}"})
    assert status in (400, 403), f"{path} answered {status}"


def test_allowlist_is_checked_before_the_key(tmp_root: Path, emulator: ServerProcess) -> None:
    gw = start_gateway(
        tmp_root,
        emulator.url,
        env={"LMGATE_API_KEYS": API_KEY, "LMGATE_ALLOW": "10.0.0.0/8,fd00::/8"},
    )
    try:
        for headers in (
            {},
            {"Authorization": f"Bearer {API_KEY}"},
            {"Authorization": f"Bearer {API_KEY}", "X-Forwarded-For": "10.1.2.3"},
            {"Authorization": f"Bearer {API_KEY}", "Forwarded": "for=10.1.2.3"},
        ):
            resp = httpx.get(gw.url + "/v1/models", headers=headers)
            assert resp.status_code == 403
            assert resp.json()["error"]["code"] == "address_not_allowed"
    finally:
        gw.stop()


def test_trusted_proxy_forwarding(tmp_root: Path, emulator: ServerProcess) -> None:
    gw = start_gateway(
        tmp_root,
        emulator.url,
        env={"LMGATE_ALLOW": "10.0.0.0/8", "LMGATE_TRUSTED_PROXIES": "127.0.0.1"},
    )
    try:
        ok = httpx.get(gw.url + "/v1/models", headers={"X-Forwarded-For": "6.6.6.6, 10.1.2.3"})
        assert ok.status_code == 200
        spoofed = httpx.get(gw.url + "/v1/models", headers={"X-Forwarded-For": "10.1.2.3, 6.6.6.6"})
        assert spoofed.status_code == 403
        assert httpx.get(gw.url + "/v1/models").status_code == 403
    finally:
        gw.stop()


def test_loopback_allowlist_and_health_auth(tmp_root: Path, emulator: ServerProcess) -> None:
    gw = start_gateway(
        tmp_root,
        emulator.url,
        env={
            "LMGATE_API_KEYS": API_KEY,
            "LMGATE_ALLOW": "127.0.0.0/8",
            "LMGATE_REQUIRE_AUTH_FOR_HEALTH": "true",
        },
    )
    try:
        assert httpx.get(gw.url + "/health").status_code == 401
        ok = httpx.get(gw.url + "/health", headers={"x-api-key": API_KEY})
        assert ok.status_code == 200
    finally:
        gw.stop()


def test_no_key_means_open_on_loopback(open_gateway: ServerProcess) -> None:
    assert httpx.get(open_gateway.url + "/v1/models").status_code == 200
    assert httpx.get(open_gateway.url + "/admin/state").status_code == 200


def test_secrets_and_prompts_never_reach_the_log(
    gateway: ServerProcess, user: httpx.Client
) -> None:
    marker = "PROMPT-MARKER-7f3a9c"
    user.post(
        "/v1/chat/completions",
        json={"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": marker}]},
    )
    httpx.get(gateway.url + "/v1/models", headers={"Authorization": "Bearer wrong-secret-x1"})
    logs = gateway.logs()
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    assert any(line.get("path") == "/v1/chat/completions" for line in lines)
    for secret in (ADMIN_KEY, API_KEY, "second-key-abcdef", "wrong-secret-x1", marker):
        assert secret not in logs
