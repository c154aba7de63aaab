"""Managed keys under attack: expired, revoked, rotated, wrong scope, near-miss guesses, model
patterns; and changes made by the CLI in another process, honoured on the next request."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.security.tools import bearer, lmgate_cli, make_key
from tests.servers import ADMIN_KEY, ServerProcess


def _status(server: ServerProcess, key: str, path: str = "/v1/models") -> int:
    return httpx.get(server.url + path, headers=bearer(key)).status_code


def test_cli_changes_apply_on_the_next_request(target: ServerProcess, tmp_root: Path) -> None:
    created = lmgate_cli("keys", "create", "--name", "cli-alice", data_dir=tmp_root / "target")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == key + "\n" and key.startswith("lmg_")  # alone on its own line
    assert key not in created.stderr
    assert _status(target, key) == 200
    rotated = lmgate_cli("keys", "rotate", "cli-alice", data_dir=tmp_root / "target")
    new = rotated.stdout.strip()
    resp = httpx.get(target.url + "/v1/models", headers=bearer(key))
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "rotated_api_key"
    assert "rotated" in resp.json()["error"]["message"]
    assert _status(target, new) == 200
    revoked = lmgate_cli("keys", "revoke", "cli-alice", data_dir=tmp_root / "target")
    assert revoked.returncode == 0
    resp = httpx.get(target.url + "/v1/models", headers=bearer(new))
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "revoked_api_key"


def test_expired_key(target: ServerProcess) -> None:
    key = make_key(target, name="short-lived", expires="1s")
    assert _status(target, key) == 200
    time.sleep(1.1)
    resp = httpx.get(target.url + "/v1/models", headers=bearer(key))
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "expired_api_key"


def test_revoked_through_the_api(target: ServerProcess) -> None:
    key = make_key(target, name="api-revoked")
    admin = bearer(ADMIN_KEY)
    assert httpx.delete(target.url + "/admin/keys/api-revoked", headers=admin).status_code == 200
    assert _status(target, key) == 401
    again = httpx.delete(target.url + "/admin/keys/api-revoked", headers=admin)
    assert again.status_code == 400
    listed = httpx.get(target.url + "/admin/keys?includeRevoked=true", headers=admin).json()
    assert any(k["name"] == "api-revoked" and k["status"] == "revoked" for k in listed["keys"])
    active = httpx.get(target.url + "/admin/keys", headers=admin).json()["keys"]
    assert all(k["name"] != "api-revoked" for k in active)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/keys"),
        ("POST", "/admin/keys"),
        ("GET", "/admin/state"),
        ("GET", "/debug/status"),
        ("GET", "/metrics"),
        ("POST", "/api/v1/models/load"),
        ("POST", "/api/v1/models/unload"),
    ],
)
def test_inference_scope_is_not_admin(target: ServerProcess, method: str, path: str) -> None:
    key = make_key(target, name=f"scope-{method}-{path.replace('/', '-')}")
    resp = httpx.request(method, target.url + path, headers=bearer(key), json={})
    assert resp.status_code == 403 and resp.json()["error"]["type"] == "permission_error"


def test_admin_scope_key(target: ServerProcess) -> None:
    key = make_key(target, name="second-admin", scope="admin")
    assert _status(target, key, "/admin/keys") == 200


def test_near_misses(target: ServerProcess) -> None:
    key = make_key(target, name="near-miss")
    for guess in (
        "lmg_",
        key[:-1],
        key + "A",
        key.upper(),
        key[:8] + "x" * (len(key) - 8),
        " " + key + "x",
        key.replace("lmg_", "LMG_"),
    ):
        resp = httpx.get(target.url + "/v1/models", headers=bearer(guess))
        assert resp.status_code == 401, guess
    assert httpx.get(target.url + f"/v1/models?api_key={key}").status_code == 401
    basic = httpx.get(target.url + "/v1/models", headers={"Authorization": f"Basic {key}"})
    assert basic.status_code == 401


def test_model_patterns(target: ServerProcess) -> None:
    key = make_key(target, name="qwen-only", models=["qwen*"])
    auth = bearer(key)
    listing = httpx.get(target.url + "/v1/models", headers=auth).json()
    assert [m["id"] for m in listing["data"]] == ["qwen/qwen3-4b"]
    v0 = httpx.get(target.url + "/api/v0/models", headers=auth).json()
    assert {m["id"] for m in v0["data"]} == {"qwen/qwen3-4b"}
    v1 = httpx.get(target.url + "/api/v1/models", headers=auth).json()
    assert {m["key"] for m in v1["models"]} == {"qwen/qwen3-4b"}
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    ok = httpx.post(
        target.url + "/v1/chat/completions", headers=auth, json={**chat, "model": "qwen/qwen3-4b"}
    )
    assert ok.status_code == 200
    for model in ("google/gemma-3-1b", "QWEN/qwen3-4b", "text-embedding-nomic-embed-text-v1.5"):
        resp = httpx.post(
            target.url + "/v1/chat/completions", headers=auth, json={**chat, "model": model}
        )
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "model_not_allowed"
    no_model = httpx.post(target.url + "/v1/chat/completions", headers=auth, json=chat)
    assert no_model.status_code == 403
    other = httpx.get(target.url + "/api/v0/models/google/gemma-3-1b", headers=auth)
    assert other.status_code == 403


def test_keys_never_reach_the_upstream(target: ServerProcess, upstream: httpx.Client) -> None:
    key = make_key(target, name="not-forwarded")
    httpx.get(target.url + "/v1/models", headers={"x-api-key": key})
    httpx.post(
        target.url + "/v1/chat/completions",
        headers=bearer(key),
        json={
            "model": "qwen/qwen3-4b",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 2,
        },
    )
    seen = str(upstream.get("/__emulator/requests").json())
    assert key not in seen and "lmg_" not in seen


def test_created_key_appears_once(target: ServerProcess) -> None:
    admin = bearer(ADMIN_KEY)
    created = httpx.post(target.url + "/admin/keys", headers=admin, json={"name": "once", "rpm": 5})
    key = created.json()["key"]
    listed = httpx.get(target.url + "/admin/keys", headers=admin).text
    one = httpx.get(target.url + "/admin/keys/once", headers=admin).json()
    assert key not in listed and key not in str(one) and one["hint"] == key[:8] + "..."
    taken = httpx.post(target.url + "/admin/keys", headers=admin, json={"name": "once"})
    assert taken.status_code == 409
    bad = httpx.post(
        target.url + "/admin/keys", headers=admin, json={"name": "x", "expires": "soon"}
    )
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
