"""Spellings LM Studio routes alike (letter case, a trailing slash, shorthands) are one route
to lmgate too: limited, filtered, counted, published and injected as the canonical spelling,
and sent upstream as it. A gateway and an emulator of their own, so counts are exact."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.observe.helpers import EventReader, eventually
from tests.security.tools import bearer, make_key
from tests.servers import ADMIN_KEY, ServerProcess, start_emulator, start_gateway, upstream_requests

QWEN = "qwen/qwen3-4b"
GEMMA = "google/gemma-3-1b"
USER = [{"role": "user", "content": "count the sheep"}]
CHAT_SPELLINGS = [
    "/v1/chat/completions/",
    "/V1/Chat/Completions",
    "/V1/CHAT/COMPLETIONS/",
    "/v1/chat/COMPLETIONS",
    "/Chat/Completions/",
    "/chat/completions/",
    "/API/V0/Chat/Completions/",
    "//v1//chat/./completions//",
]
# (canonical path, kind, body) and other spellings of each inference route
KINDS: list[tuple[str, str, dict[str, Any], list[str]]] = [
    ("/v1/chat/completions", "chat", {"messages": USER, "max_tokens": 4}, CHAT_SPELLINGS),
    ("/v1/completions", "completions", {"prompt": "once upon", "max_tokens": 4},
     ["/V1/Completions/", "/Completions", "/api/v0/COMPLETIONS/"]),
    ("/v1/messages", "messages", {"messages": USER, "max_tokens": 4},
     ["/V1/Messages/", "/v1/MESSAGES"]),
    ("/v1/responses", "responses", {"input": "hi", "max_output_tokens": 4},
     ["/v1/Responses/", "/V1/RESPONSES"]),
    ("/api/v1/chat", "native_chat", {"input": "hi", "max_output_tokens": 4},
     ["/API/V1/CHAT/", "/Api/v1/Chat"]),
]  # fmt: skip
LISTING_SPELLINGS = [
    ("/v1/models", "data", "id"),
    ("/v1/MODELS/", "data", "id"),
    ("/V1/Models", "data", "id"),
    ("/models/", "data", "id"),
    ("/MODELS", "data", "id"),
    ("/api/v0/models/", "data", "id"),
    ("/API/V0/MODELS", "data", "id"),
    ("/api/v1/models/", "models", "key"),
    ("/API/V1/MODELS", "models", "key"),
    ("/Api/V1/Models/", "models", "key"),
]


@pytest.fixture(scope="module")
def spell_upstream(tmp_root: Path) -> Iterator[ServerProcess]:
    server = start_emulator(tmp_root, "--token-delay", "0.002", name="spell-emulator")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def spelled(tmp_root: Path, spell_upstream: ServerProcess) -> Iterator[ServerProcess]:
    env = {
        "LMGATE_ADMIN_KEY": ADMIN_KEY,
        "LMGATE_USAGE_FLUSH_SECONDS": "0.2",
        "LMGATE_AUTH_FAIL_LIMIT": "0",
    }
    server = start_gateway(tmp_root, spell_upstream.url, env=env)
    yield server
    server.stop()


@pytest.fixture
def direct(spell_upstream: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=spell_upstream.url, timeout=30) as client:
        client.delete("/__emulator/requests")
        yield client


def _admin(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=bearer(ADMIN_KEY), timeout=30)


def _error(resp: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = resp.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    return error


def _inference(direct: httpx.Client) -> list[dict[str, Any]]:
    """What the upstream received, minus the gateway's own model-list polls."""
    return [r for r in upstream_requests(direct) if r["method"] == "POST"]


def _canonical(path: str) -> str:
    """The spelling LM Studio resolves `path` to, worked out here independently of lmgate."""
    lowered = "/" + "/".join(s for s in path.lower().split("/") if s not in ("", "."))
    return lowered if lowered.startswith(("/v1/", "/api/")) else "/v1" + lowered


# --- limits ------------------------------------------------------------------------------------


async def _hold(client: httpx.AsyncClient, path: str, seconds: float) -> httpx.Response:
    """An inference request the upstream sits on for `seconds`: it holds a concurrency slot."""
    body = {"model": QWEN, "messages": USER, "max_tokens": 2}
    return await client.post(path, json=body, headers={"x-emulator-delay": f"{seconds:.1f}"})


HOLD = "6.0"  # seconds the upstream sits on the request that holds the slot


async def _upstream_has_it(upstream: str) -> None:
    """Wait until the upstream holds the slow request: it passed every limit on the way."""
    async with httpx.AsyncClient(base_url=upstream, timeout=30) as direct:
        for _ in range(200):
            seen = (await direct.get("/__emulator/requests")).json()
            if any(r["headers"].get("x-emulator-delay") == HOLD for r in seen):
                return
            await asyncio.sleep(0.025)
    raise AssertionError("the slow request never reached the upstream")


async def _while_held(
    url: str, upstream: str, key: str, holder: str, others: list[str]
) -> tuple[httpx.Response, list[httpx.Response]]:
    async with httpx.AsyncClient(base_url=upstream) as direct:
        await direct.delete("/__emulator/requests")
    async with httpx.AsyncClient(base_url=url, headers=bearer(key), timeout=60) as client:
        held = asyncio.create_task(_hold(client, holder, float(HOLD)))
        await _upstream_has_it(upstream)
        tried = await asyncio.gather(*(_hold(client, p, 0) for p in others))
        return await held, list(tried)


@pytest.mark.parametrize("holder", ["/v1/chat/completions", "/V1/Chat/Completions/"])
async def test_every_spelling_counts_against_max_concurrent(
    spelled: ServerProcess, spell_upstream: ServerProcess, holder: str
) -> None:
    key = make_key(spelled, name=f"conc-{abs(hash(holder)) % 10**8}", max_concurrent=1)
    others = [p for p in ["/v1/chat/completions", *CHAT_SPELLINGS] if p != holder]
    held, tried = await _while_held(spelled.url, spell_upstream.url, key, holder, others)
    assert held.status_code == 200, held.text
    for path, resp in zip(others, tried, strict=True):
        assert resp.status_code == 429, f"{path}: {resp.status_code}"
        assert _error(resp)["code"] == "concurrency_limit_exceeded"
    async with httpx.AsyncClient(base_url=spelled.url, headers=bearer(key), timeout=60) as again:
        assert (await _hold(again, others[-1], 0)).status_code == 200  # the slot came back


@pytest.mark.parametrize(("canonical", "kind", "body", "spellings"), KINDS)
def test_every_spelling_counts_against_tpm(
    spelled: ServerProcess, canonical: str, kind: str, body: dict[str, Any], spellings: list[str]
) -> None:
    for first, second in [(s, canonical) for s in spellings] + [(canonical, spellings[0])]:
        key = make_key(spelled, name=f"tpm-{kind}-{abs(hash(first)) % 10**8}", tpm=1)
        with httpx.Client(base_url=spelled.url, headers=bearer(key), timeout=30) as client:
            ok = client.post(first, json={**body, "model": QWEN})
            assert ok.status_code == 200, f"{first}: {ok.text}"
            over = client.post(second, json={**body, "model": QWEN})
            assert over.status_code == 429, f"{first} then {second}: {over.status_code}"
            assert _error(over)["code"] == "token_rate_limit_exceeded"


# --- model patterns and listings ---------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_only(spelled: ServerProcess) -> str:
    return make_key(spelled, name="qwen-only", models=["qwen*"])


@pytest.mark.parametrize(("path", "field", "id_field"), LISTING_SPELLINGS)
def test_every_listing_spelling_is_filtered(
    spelled: ServerProcess, qwen_only: str, path: str, field: str, id_field: str
) -> None:
    resp = httpx.get(spelled.url + path, headers=bearer(qwen_only))
    assert resp.status_code == 200, resp.text
    ids = [entry[id_field] for entry in resp.json()[field]]
    assert ids and all(i.startswith("qwen") for i in ids), f"{path}: {ids}"
    with _admin(spelled) as admin:  # the same listing, unfiltered, holds others
        everything = [e[id_field] for e in admin.get(path).json()[field]]
    assert set(ids) < set(everything)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/google/gemma-3-1b",
        "/V1/MODELS/google/gemma-3-1b/",
        "/API/V0/Models/google/gemma-3-1b",
        "/api/v0/MODELS/google/gemma-3-1b/",
        "/Api/V1/Models/google/gemma-3-1b",
    ],
)
def test_every_model_path_spelling_is_checked(
    spelled: ServerProcess, qwen_only: str, path: str
) -> None:
    resp = httpx.get(spelled.url + path, headers=bearer(qwen_only))
    assert resp.status_code == 403 and _error(resp)["code"] == "model_not_allowed", path


def test_an_allowed_model_path_is_served_in_any_spelling(
    spelled: ServerProcess, qwen_only: str, direct: httpx.Client
) -> None:
    for path in ("/api/v0/models/qwen/qwen3-4b", "/API/V0/MODELS/qwen/qwen3-4b/"):
        resp = httpx.get(spelled.url + path, headers=bearer(qwen_only))
        assert resp.status_code == 200 and resp.json()["id"] == QWEN, path
    seen = [r["path"] for r in upstream_requests(direct) if "qwen3" in str(r["path"])]
    assert seen == ["/api/v0/models/qwen/qwen3-4b"] * 2  # route canonical, the id as spelled


@pytest.mark.parametrize("path", [p for _, _, _, spellings in KINDS for p in spellings])
def test_every_inference_spelling_checks_the_model(
    spelled: ServerProcess, qwen_only: str, path: str
) -> None:
    body = next(k[2] for k in KINDS if path in k[3])
    for refused in ({**body, "model": GEMMA}, body):  # another model; no model at all
        resp = httpx.post(spelled.url + path, headers=bearer(qwen_only), json=refused)
        assert resp.status_code == 403 and _error(resp)["code"] == "model_not_allowed", path
    resp = httpx.post(spelled.url + path, headers=bearer(qwen_only), json={**body, "model": QWEN})
    assert resp.status_code == 200, f"{path}: {resp.text}"


# --- what goes upstream, injection, usage and events -------------------------------------------


@pytest.fixture
def active_qwen(spelled: ServerProcess) -> Iterator[None]:
    with _admin(spelled) as admin:
        defaults = {"temperature": 0.25, "maxTokens": 3, "topK": 7}
        resp = admin.post(
            "/admin/models/activate", json={"modelKey": QWEN, "defaultInference": defaults}
        )
        assert resp.status_code == 200, resp.text
        yield
        admin.post("/admin/models/unload", json={"modelKey": QWEN})


@pytest.mark.usefixtures("active_qwen")
def test_every_spelling_is_injected_and_sent_canonical(
    spelled: ServerProcess, direct: httpx.Client
) -> None:
    key = make_key(spelled, name="injected")
    sent = []
    for canonical, _, body, spellings in KINDS:
        for path in [canonical, *spellings]:
            bare = {k: v for k, v in body.items() if not k.startswith("max")}  # no model either
            resp = httpx.post(spelled.url + path, headers=bearer(key), json=bare)
            assert resp.status_code == 200, f"{path}: {resp.text}"
            sent.append(_canonical(path))
    received = _inference(direct)
    assert [r["path"] for r in received] == sent
    for request in received:
        body = request["body"]
        assert body["model"] == QWEN and body["temperature"] == 0.25, request
        tokens = body.get("max_tokens", body.get("max_output_tokens"))
        assert tokens == 3, request


def test_every_spelling_is_counted_and_published(spelled: ServerProcess) -> None:
    key = make_key(spelled, name="counted")
    reader = EventReader(spelled.url)
    try:
        eventually(lambda: reader.status == 200)
        ids = []
        with httpx.Client(base_url=spelled.url, headers=bearer(key), timeout=30) as client:
            for streamed in (False, True):
                for path in CHAT_SPELLINGS:
                    body = {"model": QWEN, "messages": USER, "max_tokens": 3, "stream": streamed}
                    resp = client.post(path, json=body)
                    assert resp.status_code == 200, f"{path}: {resp.text}"
                    ids.append(resp.headers["x-request-id"])
        finished = {}
        for _ in ids:
            data = reader.until("inference_complete", lambda d: d["key"] == "counted")
            finished[data["requestId"]] = data
        assert set(finished) == set(ids)
        for data in finished.values():
            assert data["endpoint"] == "chat" and data["path"] in (
                "/v1/chat/completions",
                "/api/v0/chat/completions",
            )
            assert data["tokensIn"] and data["tokensOut"]
    finally:
        reader.close()

    def usage() -> dict[str, Any] | None:
        with _admin(spelled) as admin:
            rows = admin.get("/admin/usage?key=counted&groupBy=endpoint").json()["groups"]
        return rows[0] if len(rows) == 1 and rows[0]["requests"] == len(ids) else None

    row = eventually(usage)
    assert row["endpoint"] == "chat" and row["tokensOut"] > 0
    with _admin(spelled) as admin:
        tracked = admin.get("/debug/requests").json()
    done = [r for r in tracked["completed"] if r["requestId"] in ids]
    assert done and all(r["endpoint"] == "chat" for r in done)


# --- a hostile key spreading its requests over spellings ---------------------------------------


async def test_spellings_do_not_multiply_a_keys_slots(spelled: ServerProcess) -> None:
    """60 requests at once from a key with 2 slots, spread over every spelling: 2 are served,
    the gateway stays small and quick, and another key is served all the while."""
    hostile = make_key(spelled, name="hostile", max_concurrent=2)
    other = make_key(spelled, name="bystander")
    proc = psutil.Process(spelled.proc.pid if spelled.proc else 0)
    rss_before = proc.memory_info().rss
    paths = [p for _, _, _, spellings in KINDS[:1] for p in spellings] * 8
    limits = httpx.Limits(max_connections=80)
    async with (
        httpx.AsyncClient(
            base_url=spelled.url, headers=bearer(hostile), limits=limits, timeout=60
        ) as attacker,
        httpx.AsyncClient(base_url=spelled.url, headers=bearer(other), timeout=60) as bystander,
    ):
        started = time.monotonic()
        attack = asyncio.gather(*(_hold(attacker, p, 5.0) for p in paths[:60]))
        await asyncio.sleep(0.5)
        served_at = time.monotonic()
        calm = await bystander.post("/v1/chat/completions", json={"model": QWEN, "messages": USER})
        waited = time.monotonic() - served_at
        answers = await attack
        elapsed = time.monotonic() - started
    assert calm.status_code == 200 and waited < 4.0, waited
    assert sum(r.status_code == 200 for r in answers) == 2
    assert all(
        _error(r)["code"] == "concurrency_limit_exceeded" for r in answers if r.status_code != 200
    )
    assert elapsed < 30.0, elapsed
    growth = proc.memory_info().rss - rss_before
    assert growth < 30 * 1024 * 1024, growth
