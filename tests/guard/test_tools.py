"""The tools permission on its own: what counts as the upstream using tools, who may, and the
key attribute from creation (CLI spec, migration of older keys) to the registry."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from lmgate.errors import Forbidden
from lmgate.exchange import Exchange
from lmgate.guard.keys import KeyRegistry, Principal
from lmgate.guard.paths import Scope
from lmgate.guard.security import bootstrap_keys
from lmgate.guard.tools import ToolAccess, upstream_tools
from lmgate.hooks import ProxyRequest
from lmgate.settings import Settings
from lmgate.store.db import DB_NAME, Database, _migrations
from lmgate.store.keys import KeyProblem, KeyStore, NewKey, key_digest, load_secret

FUNCTION = {"type": "function", "function": {"name": "f", "parameters": {}}}
RESPONSES_FUNCTION = {"type": "function", "name": "f", "parameters": {}}
REMOTE_MCP = {"type": "mcp", "server_label": "hf", "server_url": "https://hf.co/mcp"}

UPSTREAM_TOOLS: list[tuple[str, dict[str, Any]]] = [
    ("native_chat", {"integrations": ["mcp/filesystem"]}),
    ("native_chat", {"integrations": "mcp/filesystem"}),
    ("native_chat", {"integrations": [{"type": "plugin", "id": "lmstudio/js-code-sandbox"}]}),
    ("native_chat", {"integrations": [{"type": "ephemeral_mcp", **REMOTE_MCP}]}),
    ("native_chat", {"integrations": {"type": "plugin", "id": "x"}}),
    ("native_chat", {"integrations": [""]}),
    ("responses", {"tools": [REMOTE_MCP]}),
    ("responses", {"tools": [RESPONSES_FUNCTION, {**REMOTE_MCP, "type": "MCP"}]}),
    ("responses", {"tools": [{"type": "mcp", "connector_id": "connector_gmail"}]}),
    ("responses", {"tools": [{"type": "web_search_preview"}]}),
    ("responses", {"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}),
    ("responses", {"tools": [{"type": "file_search"}]}),
    ("responses", {"tools": [{"type": 7}]}),
    ("responses", {"tools": REMOTE_MCP}),
    ("responses", {"tools": ["mcp"]}),
    ("responses", {"input": [{"type": "mcp_approval_response", "approve": True}]}),
    ("responses", {"integrations": ["mcp/filesystem"]}),
    ("chat", {"tools": [FUNCTION, REMOTE_MCP]}),
    ("chat", {"integrations": ["mcp/filesystem"]}),
    ("messages", {"mcp_servers": [{"type": "url", "url": "https://x/mcp", "name": "x"}]}),
    ("messages", {"tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
    ("messages", {"tools": [{"type": "mcp_toolset", "mcp_server_name": "x"}]}),
    ("completions", {"tools": [REMOTE_MCP]}),
]

CLIENT_TOOLS: list[tuple[str, dict[str, Any]]] = [
    ("native_chat", {"integrations": []}),
    ("native_chat", {"integrations": None, "input": "hi"}),
    ("chat", {"tools": [FUNCTION], "tool_choice": "auto"}),
    ("chat", {"tools": [], "functions": [{"name": "f"}]}),
    ("chat", {"tools": [{"type": "custom", "custom": {"name": "grammar"}}]}),
    ("responses", {"tools": [RESPONSES_FUNCTION], "input": [{"role": "user", "content": "x"}]}),
    ("responses", {"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]}),
    ("responses", {"input": "mcp please"}),
    ("messages", {"tools": [{"name": "get_weather", "input_schema": {}}]}),
    ("messages", {"tools": [{"type": "custom", "name": "x", "input_schema": {}}]}),
    ("messages", {"tools": [{"type": "bash_20250124", "name": "bash"}]}),
    ("messages", {"tools": [{"type": "text_editor_20250728", "name": "str_replace"}]}),
    ("messages", {"mcp_servers": []}),
    ("embeddings", {"input": "integrations"}),
]


@pytest.mark.parametrize(("kind", "body"), UPSTREAM_TOOLS)
def test_what_has_the_upstream_use_tools(kind: str, body: dict[str, Any]) -> None:
    found = upstream_tools(body, kind)
    assert found is not None and len(found) < 80


@pytest.mark.parametrize(("kind", "body"), CLIENT_TOOLS)
def test_client_side_tools_are_not_the_upstreams(kind: str, body: dict[str, Any]) -> None:
    assert upstream_tools(body, kind) is None


def _request(principal: Principal | None, body: dict[str, Any]) -> ProxyRequest:
    scope: dict[str, Any] = {"headers": []}
    if principal is not None:
        scope["lmgate.principal"] = principal
    return ProxyRequest(scope, "POST", "/api/v1/chat", "native_chat", body)


async def test_the_hook_refuses_keys_without_the_permission() -> None:
    hook = ToolAccess()
    body = {"model": "qwen/qwen3-4b", "input": "hi", "integrations": ["mcp/filesystem"]}
    ex = Exchange("r", "POST", "/api/v1/chat", "192.168.1.20")
    alice = Principal("key_1", "alice", Scope.INFERENCE)
    with pytest.raises(Forbidden) as refused:
        await hook.before_forward(ex, _request(alice, body))
    error = refused.value
    assert (error.status, error.type, error.code) == (403, "permission_error", "tools_not_allowed")
    assert "alice" in error.message and "--tools allow" in error.message
    assert "'integrations'" in error.message
    trusted = Principal("key_2", "bob", Scope.INFERENCE, tools=True)
    assert await hook.before_forward(ex, _request(trusted, body)) is None
    assert await hook.before_forward(ex, _request(alice, {"input": "hi"})) is None


async def test_without_keys_only_this_machine_may() -> None:
    hook = ToolAccess()
    body = {"input": "hi", "integrations": ["mcp/filesystem"]}
    for local in ("127.0.0.1", "127.8.0.1", "::1"):
        ex = Exchange("r", "POST", "/api/v1/chat", local)
        assert await hook.before_forward(ex, _request(None, body)) is None
    for remote in ("192.168.1.20", "fd00::1", None, "garbage"):
        ex = Exchange("r", "POST", "/api/v1/chat", remote)
        with pytest.raises(Forbidden, match="without a key"):
            await hook.before_forward(ex, _request(None, body))


def test_bootstrap_keys_admin_may_and_the_others_may_not(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, admin_key="a" * 24, api_keys=["b" * 24], metrics_key="c" * 24
    )
    registry = KeyRegistry(b"s" * 32, bootstrap_keys(settings), None)
    tools = {}
    for token in ("a", "b", "c"):
        found = registry.identify((token * 24).encode())
        assert isinstance(found, Principal)
        tools[found.scope] = found.tools
    assert tools == {Scope.ADMIN: True, Scope.INFERENCE: False, Scope.METRICS: False}


def test_managed_keys_default_by_scope_and_reach_the_registry(tmp_path: Path) -> None:
    db = Database(tmp_path)
    secret = load_secret(tmp_path)
    store = KeyStore(db, secret)
    made = {
        "plain": store.create(NewKey(name="plain")),
        "trusted": store.create(NewKey(name="trusted", tools="allow")),
        "root": store.create(NewKey(name="root", scope="admin")),
        "careful-root": store.create(NewKey(name="careful-root", scope="admin", tools="deny")),
        "prom": store.create(NewKey(name="prom", scope="metrics", tools="deny")),
    }
    expected = {"plain": False, "trusted": True, "root": True, "careful-root": False, "prom": False}
    assert {name: row.tools for name, (row, _) in made.items()} == expected
    assert made["trusted"][0].as_json()["tools"] == "allow"
    assert made["plain"][0].as_json()["tools"] == "deny"
    registry = KeyRegistry(secret, [], db.path)
    for name, (_, key) in made.items():
        found = registry.identify(key.encode())
        assert isinstance(found, Principal) and found.tools is expected[name], name
    registry.close()
    rotated, _ = store.rotate("trusted")
    assert rotated.tools
    for spec in (
        NewKey(name="x", tools="yes"),
        NewKey(name="y", tools="ALLOW "),
        NewKey(name="z", scope="metrics", tools="allow"),
    ):
        with pytest.raises(KeyProblem):
            store.create(spec)


def test_keys_made_before_the_permission_keep_what_they_could_do(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    for number, sql in _migrations():
        if number <= 5:
            conn.executescript(sql)
    conn.execute("PRAGMA user_version=5")
    secret = load_secret(tmp_path)
    conn.execute(
        "INSERT INTO api_keys (id, name, digest, hint, scope, created_at)"
        " VALUES ('key_a', 'root', ?, 'lmg_abcd', 'admin', 1.0),"
        " ('key_i', 'alice', ?, 'lmg_efgh', 'inference', 2.0)",
        (key_digest(secret, b"root-key"), key_digest(secret, b"alice-key")),
    )
    conn.close()
    db = Database(tmp_path)
    rows = {r.name: r.tools for r in KeyStore(db, secret).list()}
    assert rows == {"root": True, "alice": False}
    registry = KeyRegistry(secret, [], db.path)
    root, alice = registry.identify(b"root-key"), registry.identify(b"alice-key")
    assert isinstance(root, Principal) and root.tools
    assert isinstance(alice, Principal) and not alice.tools
    registry.close()
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE api_keys SET tools = 2 WHERE id = 'key_i'")
