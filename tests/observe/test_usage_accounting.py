"""Usage accounting against real servers: what `/admin/usage` records equals what the
upstream counted, streamed or not, on every endpoint; and asking a stream for its usage is
invisible to a client that did not."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.observe.conftest import KEYS, SETTINGS, client, key_name
from tests.servers import ADMIN_KEY, ServerProcess, start_gateway, upstream_requests

QWEN = "qwen/qwen3-4b"
EMBED = "text-embedding-nomic-embed-text-v1.5"
USER = [{"role": "user", "content": "count the sheep in the field"}]


def _usage_of(body: dict[str, Any], kind: str) -> tuple[int, int]:
    if kind == "responses":
        return body["usage"]["input_tokens"], body["usage"]["output_tokens"]
    if kind == "messages":
        return body["usage"]["input_tokens"], body["usage"]["output_tokens"]
    if kind == "native_chat":
        return body["stats"]["input_tokens"], body["stats"]["total_output_tokens"]
    return body["usage"]["prompt_tokens"], body["usage"].get("completion_tokens", 0)


CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("chat", "/v1/chat/completions", {"model": QWEN, "messages": USER, "max_tokens": 7}),
    ("completions", "/v1/completions", {"model": QWEN, "prompt": "once upon", "max_tokens": 5}),
    ("messages", "/v1/messages", {"model": QWEN, "messages": USER, "max_tokens": 6}),
    ("responses", "/v1/responses", {"model": QWEN, "input": "hello", "max_output_tokens": 4}),
    ("native_chat", "/api/v1/chat", {"model": QWEN, "input": "hi there", "max_output_tokens": 3}),
    ("chat", "/api/v0/chat/completions", {"model": QWEN, "messages": USER, "max_tokens": 2}),
]


def _admin_usage(server: ServerProcess, query: str) -> dict[str, Any]:
    with client(server, ADMIN_KEY) as admin:
        resp = admin.get("/admin/usage" + query)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_usage_equals_the_upstreams_count_for_every_endpoint(
    observed: ServerProcess, direct: httpx.Client
) -> None:
    expected: dict[str, list[int]] = {}
    with client(observed, KEYS[3]) as user:
        for kind, path, body in CALLS:
            want = _usage_of(direct.post(path, json=body).json(), kind)
            for streamed in (False, True):
                resp = user.post(path, json={**body, "stream": streamed})
                assert resp.status_code == 200, resp.text
                if not streamed:
                    assert _usage_of(resp.json(), kind) == want
                tally = expected.setdefault(kind, [0, 0, 0])
                tally[0] += 1
                tally[1] += want[0]
                tally[2] += want[1]
        resp = user.post("/v1/embeddings", json={"model": EMBED, "input": ["a", "b"]})
        emb = _usage_of(resp.json(), "embeddings")
        expected["embeddings"] = [1, emb[0], 0]
    found = _admin_usage(observed, f"?key={key_name(3)}&groupBy=endpoint")
    got = {g["endpoint"]: [g["requests"], g["tokensIn"], g["tokensOut"]] for g in found["groups"]}
    assert got == expected
    assert found["totals"]["requests"] == 13 and found["totals"]["unreported"] == 0
    assert found["totals"]["totalTokens"] == sum(v[1] + v[2] for v in expected.values())


def _frames(text: str) -> list[Any]:
    """The data payloads of a stream, without the per-request id and timestamp."""
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: {"):
            payload = json.loads(line[6:])
            payload.pop("id", None)
            payload.pop("created", None)
            out.append(payload)
        elif line.startswith("data: "):
            out.append(line[6:])
    return out


def test_the_extra_usage_chunk_never_reaches_a_client_that_did_not_ask(
    observed: ServerProcess, direct: httpx.Client
) -> None:
    body = {"model": QWEN, "messages": USER, "max_tokens": 5, "stream": True}
    want = direct.post("/v1/chat/completions", json=body).text
    direct.delete("/__emulator/requests")
    with client(observed, KEYS[5]) as user:
        got = user.post("/v1/chat/completions", json=body).text
    assert _frames(got) == _frames(want)  # byte for byte but for ids and timestamps
    # the gateway's model sync may have called the emulator since
    sent = [r for r in upstream_requests(direct) if r["path"] == "/v1/chat/completions"][-1]["body"]
    assert isinstance(sent, dict) and sent["stream_options"] == {"include_usage": True}

    oai = openai.OpenAI(base_url=observed.url + "/v1", api_key=KEYS[5], max_retries=0)
    try:
        chunks = list(
            oai.chat.completions.create(model=QWEN, messages=USER, max_tokens=5, stream=True)
        )
        assert chunks and all(c.usage is None and c.choices for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "length"
        asked = list(
            oai.chat.completions.create(
                model=QWEN,
                messages=USER,
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    finally:
        oai.close()
    assert len(asked) == len(chunks) + 1
    usage = asked[-1].usage
    assert usage is not None and asked[-1].choices == []
    assert (usage.prompt_tokens, usage.completion_tokens) == _usage_of(
        direct.post("/v1/chat/completions", json={**body, "stream": False}).json(), "chat"
    )


def test_filters_and_grouping(observed: ServerProcess) -> None:
    with client(observed, KEYS[6]) as user:
        for model in (QWEN, QWEN, "google/gemma-3-1b"):
            user.post(
                "/v1/chat/completions", json={"model": model, "messages": USER, "max_tokens": 1}
            )
    mine = f"?key={key_name(6)}"
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    by_day = _admin_usage(observed, mine + "&groupBy=day,model")
    assert [(g["day"], g["model"], g["requests"]) for g in by_day["groups"]] == [
        (today, "google/gemma-3-1b", 1),
        (today, QWEN, 2),
    ]
    assert _admin_usage(observed, mine + f"&model={QWEN}")["totals"]["requests"] == 2
    assert _admin_usage(observed, mine + f"&since={today}")["totals"]["requests"] == 3
    assert _admin_usage(observed, mine + f"&until={today}")["totals"]["requests"] == 0
    future = datetime.now(UTC).timestamp() + 3600
    assert _admin_usage(observed, mine + f"&since={future}")["totals"]["requests"] == 0
    assert _admin_usage(observed, "?key=-")["totals"]["requests"] == 0  # auth is on
    keys = _admin_usage(observed, "?groupBy=key")["groups"]
    assert {"key": key_name(6)} | {"requests": 3} in [
        {"key": g["key"], "requests": g["requests"]} for g in keys
    ]
    with client(observed, ADMIN_KEY) as admin:
        bad = admin.get("/admin/usage?groupBy=week")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "groupBy"
        bad = admin.get("/admin/usage?since=yesterday")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"
    with client(observed, KEYS[6]) as user:
        assert user.get("/admin/usage").status_code == 403


@pytest.mark.timeout(60)
def test_pending_usage_is_written_at_shutdown(tmp_root: Path, obs_emulator: ServerProcess) -> None:
    data = tmp_root / "usage-restart"
    env = {**SETTINGS, "LMGATE_USAGE_FLUSH_SECONDS": "3600"}  # only the shutdown writes
    gw = start_gateway(tmp_root, obs_emulator.url, env=env, data_dir=data)
    with client(gw, KEYS[1]) as user:
        body = {"model": QWEN, "messages": USER, "max_tokens": 3}
        assert user.post("/v1/chat/completions", json=body).status_code == 200
    gw.stop()
    gw = start_gateway(tmp_root, obs_emulator.url, env=env, data_dir=data)
    try:
        totals = _admin_usage(gw, "")["totals"]
        assert totals["requests"] == 1 and totals["tokensOut"] == 3
    finally:
        gw.stop()
