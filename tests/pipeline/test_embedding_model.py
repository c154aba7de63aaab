"""Embeddings get a model by capability, never the active chat model; what lmgate injected
is visible in `inference_start` events and `/debug/requests` (names and values, no prompt)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ADMIN_KEY, ServerProcess, start_emulator, start_gateway

QWEN = "qwen/qwen3-4b"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
PROMPT = "a secret prompt that must stay out of events"


@pytest.fixture(scope="module")
def emu(tmp_root: Path) -> Iterator[ServerProcess]:
    server = start_emulator(tmp_root, name="emu-embed")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gw(tmp_root: Path, emu: ServerProcess) -> Iterator[ServerProcess]:
    env = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "0.3"}
    server = start_gateway(tmp_root, emu.url, env=env, data_dir=tmp_root / "embed")
    yield server
    server.stop()


@pytest.fixture
def adm(gw: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=gw.url, headers=headers, timeout=30) as client:
        yield client


def _last_upstream_body(emu: ServerProcess, path: str) -> dict[str, Any]:
    requests = httpx.get(emu.url + "/__emulator/requests").json()
    body: dict[str, Any] = [r for r in requests if r["path"] == path][-1]["body"]
    return body


def _embed(adm: httpx.Client, emu: ServerProcess) -> dict[str, Any]:
    adm.post("/v1/embeddings", json={"input": PROMPT})
    return _last_upstream_body(emu, "/v1/embeddings")


def _eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.1)


def test_embeddings_by_capability(adm: httpx.Client, emu: ServerProcess) -> None:
    adm.post("/admin/models/unload", json={"modelKey": NOMIC})
    assert adm.post("/admin/models/activate", json={"modelKey": QWEN}).status_code == 200
    _eventually(lambda: "model" not in _embed(adm, emu))  # never the chat model

    loaded = adm.post("/admin/models/load", json={"modelKey": NOMIC, "activate": False})
    assert loaded.status_code == 200 and loaded.json()["activated"] is False
    assert _embed(adm, emu)["model"] == NOMIC  # the one loaded embedding model
    chat = adm.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert chat.status_code == 200
    assert _last_upstream_body(emu, "/v1/chat/completions")["model"] == QWEN

    # unloaded elsewhere (LM Studio's UI): the poll notices, and embeddings go without a model
    gone = httpx.post(emu.url + "/api/v1/models/unload", json={"instance_id": NOMIC})
    assert gone.status_code == 200
    _eventually(lambda: NOMIC not in adm.get("/admin/upstream").json()["loadedInstances"])
    assert "model" not in _embed(adm, emu)


def test_a_default_embedding_model_wins(adm: httpx.Client, emu: ServerProcess) -> None:
    body = {"modelKey": QWEN, "defaultEmbeddingModel": NOMIC}
    answer = adm.post("/admin/models/activate", json=body)
    assert answer.status_code == 200 and answer.json()["defaultEmbeddingModel"] == NOMIC
    assert adm.get("/admin/state").json()["defaultEmbeddingModel"] == NOMIC
    assert _embed(adm, emu)["model"] == NOMIC  # not loaded: LM Studio loads it (JIT)
    # activating again without the field keeps it; null clears it
    adm.post("/admin/models/activate", json={"modelKey": QWEN})
    assert adm.get("/admin/state").json()["defaultEmbeddingModel"] == NOMIC
    unknown = adm.post("/admin/models/activate", json={**body, "defaultEmbeddingModel": "nomic"})
    assert unknown.status_code == 404 and NOMIC in unknown.json()["error"]["message"]
    adm.post("/admin/models/activate", json={"modelKey": QWEN, "defaultEmbeddingModel": None})
    assert adm.get("/admin/state").json()["defaultEmbeddingModel"] is None


def test_cli_sets_the_embedding_model(gw: ServerProcess, adm: httpx.Client) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    env |= {"LMGATE_URL": gw.url, "LMGATE_ADMIN_KEY": ADMIN_KEY}
    out = subprocess.run(
        [sys.executable, "-m", "lmgate", "models", "activate", QWEN, "--embedding-model", NOMIC],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert adm.get("/admin/state").json()["defaultEmbeddingModel"] == NOMIC
    adm.post("/admin/models/activate", json={"modelKey": QWEN, "defaultEmbeddingModel": None})


def test_injected_fields_are_shown_never_the_prompt(adm: httpx.Client) -> None:
    defaults = {"temperature": 0.25, "maxTokens": 7}
    adm.post("/admin/models/activate", json={"modelKey": QWEN, "defaultInference": defaults})
    rid = "injected-visible-1"
    answer = adm.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": PROMPT}], "temperature": 0.9},
        headers={"X-Request-ID": rid},
    )
    assert answer.status_code == 200
    expected = {"model": QWEN, "max_tokens": 7}  # temperature was the client's own
    listed = [r for r in adm.get("/debug/requests").json()["completed"] if r["requestId"] == rid]
    assert listed and listed[0]["injected"] == expected
    events = adm.get("/debug/metrics").json()["recentActivity"]
    starts = [e for e in events if e["type"] == "inference_start" and e["requestId"] == rid]
    assert starts and starts[0]["injected"] == expected
    assert PROMPT not in str(events) and PROMPT not in str(listed)
    adm.post("/admin/models/activate", json={"modelKey": QWEN, "defaultInference": {}})
