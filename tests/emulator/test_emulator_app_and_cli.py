"""In-process `create_app`, the catalog file, CLI parsing and process lifecycle."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import orjson
import pytest

from lmgate.emulator import EmulatorConfig, ModelSpec, create_app
from lmgate.emulator.__main__ import parse_args
from lmgate.emulator.config import load_models_file

if TYPE_CHECKING:
    from tests.emulator.conftest import Emulator


async def client_for(config: EmulatorConfig) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(config))
    async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
        yield client


@pytest.fixture
async def inproc() -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(EmulatorConfig(load_delay=0, token_delay=0)):
        yield client


async def test_apps_keep_separate_state(inproc: httpx.AsyncClient) -> None:
    async for other in client_for(EmulatorConfig(preload=False, jit=False)):
        assert (await other.get("/v1/models")).json()["data"] == []
        await inproc.post("/api/v1/models/load", json={"model": "google/gemma-3-1b"})
        assert (await other.get("/__emulator/stats")).json()["loads"] == 0
        assert (await inproc.get("/__emulator/stats")).json()["loads"] == 1


async def test_in_process_streaming(inproc: httpx.AsyncClient) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "stream": True, "max_tokens": 2}
    response = await inproc.post("/v1/chat/completions", json=body)
    assert response.text.count("data: ") == 4 and response.text.endswith("data: [DONE]\n\n")
    stats = (await inproc.get("/__emulator/stats")).json()
    assert (stats["completed_streams"], stats["active_streams"]) == (1, 0)


async def test_idle_ttl_unloads_jit_model(inproc: httpx.AsyncClient) -> None:
    body = {
        "model": "google/gemma-3-1b",
        "ttl": 0.05,
        "messages": [{"role": "user", "content": "x"}],
    }
    assert (await inproc.post("/v1/chat/completions", json=body)).status_code == 200
    row = (await inproc.get("/api/v0/models/google/gemma-3-1b")).json()
    assert row["state"] == "loaded"
    await asyncio.sleep(0.1)
    row = (await inproc.get("/api/v0/models/google/gemma-3-1b")).json()
    assert row["state"] == "not-loaded"
    assert (await inproc.get("/__emulator/stats")).json()["unloads"] == 1


async def test_auto_evict_keeps_one_jit_model(inproc: httpx.AsyncClient) -> None:
    chat = {"model": "google/gemma-3-1b", "messages": [{"role": "user", "content": "x"}]}
    await inproc.post("/v1/chat/completions", json=chat)
    embed = {"model": "text-embedding-nomic-embed-text-v1.5", "input": "x"}
    assert (await inproc.post("/v1/embeddings", json=embed)).status_code == 200
    states = {r["id"]: r["state"] for r in (await inproc.get("/api/v0/models")).json()["data"]}
    assert states == {
        "qwen/qwen3-4b": "loaded",  # preloaded, not a JIT load: never evicted
        "google/gemma-3-1b": "not-loaded",
        "text-embedding-nomic-embed-text-v1.5": "loaded",
    }


def write_catalog(tmp_path: Path) -> Path:
    path = tmp_path / "models.json"
    entries = [
        {"key": "acme/tiny-chat", "type": "llm", "max_context_length": 8192},
        {"key": "acme/embedder", "type": "embedding", "max_context_length": 512},
    ]
    path.write_bytes(orjson.dumps({"models": entries}))
    return path


async def test_models_file_replaces_catalog(tmp_path: Path) -> None:
    specs = load_models_file(write_catalog(tmp_path))
    assert specs[0] == ModelSpec("acme/tiny-chat", "llm", 8192)
    assert specs[0].publisher == "acme"
    async for client in client_for(EmulatorConfig(models=specs)):
        models = (await client.get("/api/v1/models")).json()["models"]
        assert [m["key"] for m in models] == ["acme/tiny-chat", "acme/embedder"]
        assert models[0]["loaded_instances"][0]["config"]["context_length"] == 4096


def test_cli_flags(tmp_path: Path) -> None:
    config = parse_args(
        [
            "--port", "9999", "--version", "0.3", "--token-delay", "0",
            "--api-token", "secret", "--unknown-status", "404", "--no-jit", "--no-preload",
            "--load-delay", "0.5", "--models", str(write_catalog(tmp_path)),
        ]
    )  # fmt: skip
    assert (config.port, config.version, config.token_delay) == (9999, "0.3", 0.0)
    assert (config.api_token, config.unknown_status, config.load_delay) == ("secret", 404, 0.5)
    assert not config.jit and not config.preload
    assert config.models[0].key == "acme/tiny-chat"
    bad = tmp_path / "bad.json"
    bad.write_text('[{"key": "x", "type": "vision", "max_context_length": 1}]')
    with pytest.raises(SystemExit):
        parse_args(["--models", str(bad)])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_exits_cleanly_on_signal(signum: signal.Signals, spawn: Callable[..., Emulator]) -> None:
    emu = spawn("--no-preload")
    emu.proc.send_signal(signum)
    try:
        assert emu.proc.wait(timeout=5) == 0
    except subprocess.TimeoutExpired:
        pytest.fail("emulator ignored the signal")
