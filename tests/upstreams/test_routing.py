"""Requests reach the upstream that has their model, with that upstream's token alone; one
model list covers every upstream; `/admin/upstreams` shows each, never a token."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import openai

from tests.servers import ADMIN_KEY, ServerProcess, upstream_requests
from tests.upstreams.conftest import ALIAS, HIDDEN, ONLY_A, ONLY_B, PLAIN, SHARED, TOKEN_B

Servers = dict[str, ServerProcess]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _sdk(gw: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=ADMIN_KEY, max_retries=0, timeout=30)


def _chats(server: ServerProcess, model: str) -> list[dict[str, object]]:
    headers = {"Authorization": f"Bearer {TOKEN_B}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=5) as client:
        return [
            r
            for r in upstream_requests(client)
            if str(r.get("path", "")).endswith("/chat/completions")
            and model in str(r.get("body", ""))
        ]


def _chat(gw: ServerProcess, model: str) -> str:
    reply = _sdk(gw).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert reply.model
    return reply.model


def test_each_model_goes_to_the_upstream_that_has_it(three: Servers) -> None:
    gw = three["gateway"]
    for model, home in ((ONLY_A, "a"), (ONLY_B, "b"), (PLAIN, "c")):
        _chat(gw, model)
        assert _chats(three[home], model), f"{model} did not reach {home}"
        for other in {"a", "b", "c"} - {home}:
            assert not _chats(three[other], model)


def test_a_model_on_two_upstreams_goes_where_it_is_loaded(three: Servers) -> None:
    gw = three["gateway"]
    before_b = len(_chats(three["b"], SHARED))
    for _ in range(4):
        _chat(gw, SHARED)
    assert len(_chats(three["a"], SHARED)) >= 4  # loaded on a (its first model), not on b
    assert len(_chats(three["b"], SHARED)) == before_b


def test_each_upstream_gets_its_own_token_and_no_other(three: Servers) -> None:
    gw = three["gateway"]
    _chat(gw, ONLY_B)
    _chat(gw, PLAIN)
    _chat(gw, ONLY_A)
    for name in ("a", "c"):
        for request in _chats(three[name], ""):
            headers = request.get("headers") or {}
            assert isinstance(headers, dict)
            assert TOKEN_B not in str(headers)
            assert ADMIN_KEY not in str(headers)  # the client's key is not forwarded either
    seen = _chats(three["b"], ONLY_B)
    assert seen and all(
        f"Bearer {TOKEN_B}" in str((r.get("headers") or {}).get("authorization")) for r in seen
    )


def test_one_merged_model_list_for_the_sdk(three: Servers) -> None:
    gw = three["gateway"]
    ids = [m.id for m in _sdk(gw).models.list()]
    assert sorted(ids) == sorted({SHARED, ONLY_A, ONLY_B, PLAIN, ALIAS})  # once; HIDDEN denied
    listing = httpx.get(gw.url + "/v1/models", headers=ADMIN, timeout=10).json()
    assert listing["object"] == "list"
    where = {e["id"]: e["lmgate"] for e in listing["data"]}
    assert where[SHARED] == {"upstreams": ["a", "b"], "loadedOn": ["a"]}
    assert where[ONLY_B] == {"upstreams": ["b"], "loadedOn": ["b"]}
    assert where[PLAIN]["upstreams"] == ["c"]
    native = httpx.get(gw.url + "/api/v1/models", headers=ADMIN, timeout=10).json()
    keys = {e["key"] for e in native["models"]}
    assert {SHARED, ONLY_A, ONLY_B} <= keys and HIDDEN not in keys


def test_a_model_no_upstream_may_serve_is_a_404_saying_why(three: Servers) -> None:
    gw = three["gateway"]
    body = {"model": HIDDEN, "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=ADMIN, timeout=10)
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["code"] == "model_not_found" and "not allowed on a" in error["message"]
    body["model"] = "nobody/has-this"
    answer = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=ADMIN, timeout=10)
    assert answer.status_code == 404 and "no upstream offers" in answer.json()["error"]["message"]
    assert not _chats(three["a"], "nobody/has-this")


def test_admin_upstreams_shows_kinds_and_no_token(three: Servers) -> None:
    gw = three["gateway"]
    answer = httpx.get(gw.url + "/admin/upstreams", headers=ADMIN, timeout=10)
    assert answer.status_code == 200
    assert TOKEN_B not in answer.text
    ups = {u["name"]: u for u in answer.json()["upstreams"]}
    assert list(ups) == ["a", "b", "c"]
    assert ups["a"]["primary"] and not ups["b"]["primary"]
    assert ups["a"]["kind"] == ups["b"]["kind"] == "lmstudio-0.4+"
    assert ups["c"]["kind"] == "openai-compatible"
    assert ups["b"]["hasToken"] and not ups["a"]["hasToken"]
    assert ups["b"]["capabilities"]["modelManagement"]
    assert not ups["c"]["capabilities"]["modelManagement"]
    assert all(u["state"] == "up" for u in ups.values())
    assert HIDDEN not in ups["a"]["models"] and ONLY_A in ups["a"]["models"]
    assert ups["b"]["loaded"] == [ONLY_B] and ups["c"]["tags"] == ["plain"]
    assert ups["a"]["maxLoadedModels"] == 2 and ups["b"]["slots"] == 1


def test_cli_lists_the_upstreams(three: Servers) -> None:
    gw = three["gateway"]
    base = [sys.executable, "-m", "lmgate", "upstreams", "list", "--url", gw.url]
    env = {**os.environ, "LMGATE_ADMIN_KEY": ADMIN_KEY, "COLUMNS": "200"}
    table = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert "a *" in table.stdout and "openai-compatible" in table.stdout
    assert TOKEN_B not in table.stdout
    raw = subprocess.run([*base, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert [u["name"] for u in json.loads(raw.stdout)["upstreams"]] == ["a", "b", "c"]


def test_admin_load_goes_to_the_named_or_a_capable_upstream(three: Servers) -> None:
    gw = three["gateway"]

    def load(**body: object) -> httpx.Response:
        return httpx.post(gw.url + "/admin/models/load", json=body, headers=ADMIN, timeout=30)

    chosen = load(modelKey=ONLY_A)  # only a offers it
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["upstream"] == "a" and chosen.json()["status"] == "loaded"
    native = httpx.get(three["a"].url + "/api/v1/models", timeout=5).json()["models"]
    assert any(m["key"] == ONLY_A and m["loaded_instances"] for m in native)
    plain = load(modelKey=PLAIN, upstream="c")  # c cannot be told to load: stored only
    assert plain.status_code == 200 and plain.json()["status"] == "stored"
    missing = load(modelKey=ONLY_B, upstream="nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "upstream_not_found"
    nobody = load(modelKey="nobody/has-this")
    assert nobody.status_code == 404 and nobody.json()["error"]["code"] == "model_not_found"


def test_an_alias_reaches_an_upstream_as_its_own_key(three: Servers) -> None:
    gw = three["gateway"]
    before = {name: len(_chats(three[name], "")) for name in ("a", "b", "c")}
    answered = _sdk(gw).chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": "alias"}], max_tokens=3
    )
    assert answered.choices
    got = {name: _chats(three[name], "")[before[name] :] for name in ("a", "b", "c")}
    assert not got["c"]
    (where,) = [name for name in ("a", "b") if got[name]]
    (sent,) = got[where]
    assert f'"{ONLY_A if where == "a" else ONLY_B}"' in str(sent["body"]).replace("'", '"')
    assert ALIAS not in str(sent["body"])
    listing = httpx.get(gw.url + "/v1/models", headers=ADMIN, timeout=10).json()
    entry = next(e for e in listing["data"] if e["id"] == ALIAS)
    assert entry["lmgate"]["upstreams"] == ["a", "b"]
    assert entry["lmgate"]["aliasOf"] == {"a": ONLY_A, "b": ONLY_B}
