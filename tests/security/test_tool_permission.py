"""Tools the upstream would run (LM Studio's mcp.json servers, plugins, remote MCP), over real
sockets: refused with 403 for keys without the permission before anything goes upstream,
forwarded unchanged for keys that hold it; function tools stay open to every key."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.tools import bearer, lmgate_cli, make_key
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess, upstream_requests

QWEN = "qwen/qwen3-4b"
USER = [{"role": "user", "content": "hi"}]
REMOTE_MCP = {"type": "mcp", "server_label": "hf", "server_url": "https://hf.co/mcp"}
FUNCTION = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}

# (path, body) pairs that would have the upstream use tools itself.
WITH_UPSTREAM_TOOLS: list[tuple[str, dict[str, Any]]] = [
    ("/api/v1/chat", {"input": "hi", "integrations": ["mcp/filesystem"]}),
    ("/api/v1/chat", {"input": "hi", "integrations": "mcp/filesystem"}),
    ("/api/v1/chat", {"input": "hi", "integrations": [{"type": "plugin", "id": "a/b"}]}),
    (
        "/api/v1/chat",
        {"input": "hi", "integrations": [{"type": "ephemeral_mcp", **REMOTE_MCP}]},
    ),
    ("/v1/responses", {"input": "hi", "tools": [REMOTE_MCP]}),
    ("/v1/responses", {"input": "hi", "tools": [{**REMOTE_MCP, "type": "Mcp"}]}),
    ("/v1/responses", {"input": "hi", "tools": [{"type": "web_search_preview"}]}),
    ("/v1/responses", {"input": [{"type": "mcp_approval_response", "approve": True}]}),
    ("/v1/chat/completions", {"messages": USER, "tools": [FUNCTION, REMOTE_MCP]}),
    ("/api/v0/chat/completions", {"messages": USER, "integrations": ["mcp/x"]}),
    ("/chat/completions", {"messages": USER, "integrations": ["mcp/x"]}),
    (
        "/v1/messages",
        {"messages": USER, "max_tokens": 3, "mcp_servers": [{"type": "url", "url": "u"}]},
    ),
]


def _marked(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    marker = f"tool-marker-{uuid.uuid4().hex}"
    return marker, {"model": QWEN, "user": marker, **body}


def _upstream_saw(emulator: ServerProcess, marker: str) -> bool:
    with httpx.Client(base_url=emulator.url) as upstream:
        return marker in json.dumps(upstream_requests(upstream))


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("path", "body"), WITH_UPSTREAM_TOOLS)
def test_keys_without_the_permission_are_refused(
    target: ServerProcess,
    emulator: ServerProcess,
    path: str,
    body: dict[str, Any],
    stream: bool,
) -> None:
    marker, sent = _marked({**body, "stream": stream})
    resp = httpx.post(target.url + path, json=sent, headers=bearer(API_KEY))
    assert resp.status_code == 403, resp.text
    assert resp.headers["content-type"] == "application/json"
    error = resp.json()["error"]
    assert error["type"] == "permission_error" and error["code"] == "tools_not_allowed"
    assert "--tools allow" in error["message"] and "api-key-1" in error["message"]
    assert not _upstream_saw(emulator, marker)


def test_keys_with_the_permission_are_forwarded_unchanged(
    target: ServerProcess, emulator: ServerProcess
) -> None:
    trusted = make_key(target, name="tools-allowed", tools="allow")
    plain = make_key(target, name="tools-default")
    for key in (ADMIN_KEY, trusted):
        for path, body in WITH_UPSTREAM_TOOLS[:6]:
            marker, sent = _marked(body)
            resp = httpx.post(target.url + path, json=sent, headers=bearer(key), timeout=30)
            assert resp.status_code != 403, resp.text
            with httpx.Client(base_url=emulator.url) as upstream:
                seen = [r for r in upstream_requests(upstream) if marker in json.dumps(r)]
            assert len(seen) == 1 and seen[0]["body"] == sent  # exactly as the client sent it
    marker, sent = _marked(WITH_UPSTREAM_TOOLS[0][1])
    resp = httpx.post(target.url + "/api/v1/chat", json=sent, headers=bearer(plain))
    assert resp.status_code == 403 and "tools-default" in resp.json()["error"]["message"]
    assert not _upstream_saw(emulator, marker)

    listed = httpx.get(target.url + "/admin/keys", headers=bearer(ADMIN_KEY)).json()["keys"]
    tools = {k["name"]: k["tools"] for k in listed}
    assert tools["tools-allowed"] == "allow" and tools["tools-default"] == "deny"
    one = httpx.get(target.url + "/admin/keys/tools-allowed", headers=bearer(ADMIN_KEY)).json()
    assert one["tools"] == "allow"
    bad = httpx.post(
        target.url + "/admin/keys",
        json={"name": "tools-bad", "tools": "sometimes"},
        headers=bearer(ADMIN_KEY),
    )
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    metrics_tools = httpx.post(
        target.url + "/admin/keys",
        json={"name": "prom-tools", "scope": "metrics", "tools": "allow"},
        headers=bearer(ADMIN_KEY),
    )
    assert metrics_tools.status_code == 400


def test_function_tools_stay_open_to_every_key(target: ServerProcess) -> None:
    with httpx.Client(base_url=target.url, headers=bearer(API_KEY), timeout=30) as client:
        chat = client.post(
            "/v1/chat/completions",
            json={"model": QWEN, "messages": USER, "tools": [FUNCTION], "max_tokens": 3},
        )
        assert chat.status_code == 200, chat.text
        responses = client.post(
            "/v1/responses",
            json={
                "model": QWEN,
                "input": "hi",
                "tools": [{"type": "function", "name": "add", "parameters": {}}],
            },
        )
        assert responses.status_code == 200, responses.text
        messages = client.post(
            "/v1/messages",
            json={
                "model": QWEN,
                "messages": USER,
                "max_tokens": 3,
                "tools": [{"name": "add", "input_schema": {"type": "object"}}],
            },
        )
        assert messages.status_code == 200, messages.text
        native = client.post(
            "/api/v1/chat", json={"model": QWEN, "input": "hi", "integrations": []}
        )
        assert native.status_code == 200, native.text


def test_without_keys_the_operator_on_this_machine_may(
    open_gateway: ServerProcess, emulator: ServerProcess
) -> None:
    marker, sent = _marked(WITH_UPSTREAM_TOOLS[0][1])
    resp = httpx.post(open_gateway.url + "/api/v1/chat", json=sent, timeout=30)
    assert resp.status_code == 200, resp.text
    assert _upstream_saw(emulator, marker)


def test_cli_makes_and_lists_the_permission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # the table's width
    data = tmp_path / "data"
    made = lmgate_cli("keys", "create", "--name", "agent", "--tools", "allow", data_dir=data)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("lmg_") and "tools allow" in made.stderr
    default = lmgate_cli("keys", "create", "--name", "chat-only", data_dir=data)
    assert default.returncode == 0 and "tools deny" in default.stderr
    bad = lmgate_cli("keys", "create", "--name", "odd", "--tools", "maybe", data_dir=data)
    assert bad.returncode == 1 and "tools must be one of allow, deny" in bad.stderr
    listed = lmgate_cli("keys", "list", "--json", data_dir=data)
    assert {k["name"]: k["tools"] for k in json.loads(listed.stdout)} == {
        "agent": "allow",
        "chat-only": "deny",
    }
    table = lmgate_cli("keys", "list", data_dir=data)
    header, agent = (
        next(line for line in table.stdout.splitlines() if word in line)
        for word in ("expires", "agent")
    )
    assert "tools" in header and "allow" in agent
