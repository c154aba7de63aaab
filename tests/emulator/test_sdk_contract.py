"""The emulator's SDK websocket surface, driven by LM Studio's own Python SDK (`lmstudio`).

The SDK client is the real one; the only thing added is the API-token handshake SDK 1.6
builds (identifier and passkey are the token's halves), which SDK 1.5 cannot send itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import lmstudio as lms
import orjson
import pytest
from websockets.asyncio.client import connect

from lmgate.loading.sdk import auth_message
from tests.emulator.conftest import TOKEN, Emulator

FULL_CONFIG: dict[str, Any] = {
    "contextLength": 8192,
    "gpu": {"ratio": 0.5},
    "ropeFrequencyBase": 1000000.0,
    "ropeFrequencyScale": 0.5,
    "llamaKCacheQuantizationType": "q8_0",
    "llamaVCacheQuantizationType": "q4_0",
    "tryMmap": False,
    "keepModelInMemory": False,
    "seed": 1234,
    "flashAttention": False,
    "evalBatchSize": 256,
}


class TokenClient(lms.AsyncClient):
    """`lms.AsyncClient` whose handshake carries an API token, as SDK 1.6 sends it."""

    def __init__(self, host: str, token: str) -> None:
        self._token_auth = auth_message(token)
        super().__init__(host)

    def _create_auth_message(self, *args: Any) -> Any:
        return self._token_auth


def host_of(emu: Emulator) -> str:
    return emu.url.removeprefix("http://")


@contextlib.asynccontextmanager
async def sdk(emu: Emulator, token: str | None = None) -> AsyncIterator[lms.AsyncClient]:
    client = lms.AsyncClient(host_of(emu)) if token is None else TokenClient(host_of(emu), token)
    async with client:
        yield client


async def test_lists_what_is_loaded_and_downloaded(emu: Emulator) -> None:
    async with sdk(emu) as client:
        loaded = await client.llm.list_loaded()
        assert [m.identifier for m in loaded] == ["qwen/qwen3-4b"]
        assert await client.embedding.list_loaded() == []
        downloaded = await client.list_downloaded_models()
        assert {(m.model_key, m.type) for m in downloaded} == {
            ("qwen/qwen3-4b", "llm"),
            ("google/gemma-3-1b", "llm"),
            ("text-embedding-nomic-embed-text-v1.5", "embedding"),
        }
        llms = await client.llm.list_downloaded()
        assert {m.model_key for m in llms} == {"qwen/qwen3-4b", "google/gemma-3-1b"}
        info = await loaded[0].get_info()
        assert info.model_key == "qwen/qwen3-4b"
        assert info.context_length == 4096
        assert info.max_context_length == 32768


async def test_load_with_full_config_reports_progress_and_reads_back(emu: Emulator) -> None:
    progress: list[float] = []
    async with sdk(emu) as client:
        handle = await client.llm.load_new_instance(
            "google/gemma-3-1b",
            "gemma-custom",
            ttl=900,
            config=FULL_CONFIG,
            on_load_progress=progress.append,
        )
        assert handle.identifier == "gemma-custom"
        assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) >= 3
        applied = (await handle.get_load_config()).to_dict()
        for name, value in FULL_CONFIG.items():
            if name == "gpu":
                assert applied["gpu"]["ratio"] == 0.5
            else:
                assert applied[name] == value, name
        info = await handle.get_info()
        assert info.context_length == 8192
        listed = {m.identifier for m in await client.llm.list_loaded()}
        assert listed == {"qwen/qwen3-4b", "gemma-custom"}

    # The HTTP surfaces see the same instance, and it serves inference.
    models = {m["key"]: m for m in emu.get("/api/v1/models")["models"]}
    instances = models["google/gemma-3-1b"]["loaded_instances"]
    assert instances == [
        {
            "id": "gemma-custom",
            "config": {
                "context_length": 8192,
                "eval_batch_size": 256,
                "parallel": 4,
                "flash_attention": False,
                "offload_kv_cache_to_gpu": True,
            },
        }
    ]
    answer = emu.post(
        "/v1/chat/completions",
        {"model": "gemma-custom", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert answer["model"] == "gemma-custom"
    assert answer["choices"][0]["message"]["content"]

    # What reached the emulator, exactly as the SDK encoded it.
    record = emu.get("/__emulator/load-configs")[-1]
    assert record["endpoint"] == "loadModel"
    assert record["model"] == "google/gemma-3-1b"
    assert record["identifier"] == "gemma-custom"
    assert record["ttl_ms"] == 900_000
    assert record["fields"]["llm.load.llama.acceleration.offloadRatio"] == 0.5
    assert record["fields"]["llm.load.llama.ropeFrequencyBase"] == {
        "checked": True,
        "value": 1000000.0,
    }
    assert record["fields"]["llm.load.llama.kCacheQuantizationType"] == {
        "checked": True,
        "value": "q8_0",
    }
    assert record["fields"]["llm.load.seed"] == {"checked": True, "value": 1234}
    assert record["fields"]["llm.load.llama.tryMmap"] is False
    assert record["stack"]["layers"][0]["layerName"] == "apiOverride"


async def test_unload_removes_the_instance_everywhere(emu: Emulator) -> None:
    async with sdk(emu) as client:
        await client.llm.load_new_instance("google/gemma-3-1b", "g2", ttl=None)
        await client.llm.unload("g2")
        assert "g2" not in {m.identifier for m in await client.llm.list_loaded()}
        with pytest.raises(lms.LMStudioServerError, match='No model found with identifier "g2"'):
            await client.llm.unload("g2")
    models = {m["key"]: m for m in emu.get("/api/v1/models")["models"]}
    assert models["google/gemma-3-1b"]["loaded_instances"] == []
    assert emu.stats()["unloads"] == 1


async def test_ttl_and_default_instance_ids(emu: Emulator) -> None:
    async with sdk(emu) as client:
        first = await client.llm.load_new_instance("google/gemma-3-1b", ttl=60)
        second = await client.llm.load_new_instance("google/gemma-3-1b", ttl=None)
        assert (first.identifier, second.identifier) == ("google/gemma-3-1b", "google/gemma-3-1b:2")
        raw = await client.llm.remote_call("listLoaded")
        ttls = {m["identifier"]: m["ttlMs"] for m in raw}
        assert ttls["google/gemma-3-1b"] == 60_000 and ttls["google/gemma-3-1b:2"] is None


async def test_get_or_load(emu: Emulator) -> None:
    async with sdk(emu) as client:
        already = await client.llm.model("qwen/qwen3-4b", config={"contextLength": 2048})
        assert already.identifier == "qwen/qwen3-4b"
        assert (await already.get_info()).context_length == 4096  # config ignored: loaded
        progress: list[float] = []
        loaded = await client.llm.model(
            "google/gemma-3-1b",
            ttl=30,
            config={"contextLength": 2048},
            on_load_progress=progress.append,
        )
        assert loaded.identifier == "google/gemma-3-1b"
        assert progress[-1] == 1.0
        assert (await loaded.get_load_config()).context_length == 2048
    assert emu.get("/__emulator/load-configs")[-1]["endpoint"] == "getOrLoad"


async def test_embedding_namespace(emu: Emulator) -> None:
    async with sdk(emu) as client:
        handle = await client.embedding.load_new_instance(
            "text-embedding-nomic-embed-text-v1.5",
            ttl=None,
            config={"contextLength": 1024, "gpu": {"ratio": "off"}},
        )
        config = (await handle.get_load_config()).to_dict()
        assert config["contextLength"] == 1024 and config["gpu"]["ratio"] == 0.0
        assert [m.identifier for m in await client.embedding.list_loaded()] == [handle.identifier]
        with pytest.raises(lms.LMStudioServerError, match="is not a model of type llm"):
            await client.llm.load_new_instance("text-embedding-nomic-embed-text-v1.5", ttl=None)
    answer = emu.post("/v1/embeddings", {"model": handle.identifier, "input": "x"})
    assert answer["data"][0]["embedding"]


async def test_errors_use_lm_studios_shape(emu: Emulator) -> None:
    async with sdk(emu) as client:
        with pytest.raises(
            lms.LMStudioServerError, match='Cannot find a model with path "no/such"'
        ):
            await client.llm.load_new_instance("no/such", ttl=None)
        with pytest.raises(lms.LMStudioModelNotFoundError):
            await client.llm.get_model_info("no-such-instance")
        with pytest.raises(lms.LMStudioServerError, match="Context length 99999 is outside"):
            await client.llm.load_new_instance(
                "google/gemma-3-1b", ttl=None, config={"contextLength": 99999}
            )
        await client.llm.load_new_instance("google/gemma-3-1b", "dup", ttl=None)
        with pytest.raises(lms.LMStudioServerError, match='identifier "dup" is already loaded'):
            await client.llm.load_new_instance("google/gemma-3-1b", "dup", ttl=None)
        assert sorted(m.identifier for m in await client.llm.list_loaded()) == [
            "dup",
            "qwen/qwen3-4b",
        ]


async def test_download_through_the_repository_namespace(emu: Emulator) -> None:
    updates: list[int] = []
    finalized: list[bool] = []
    async with sdk(emu) as client:
        found = await client.repository.search_models("gemma", limit=5)
        assert [m.search_result.name for m in found] == ["google/gemma-3-1b"]
        options = await found[0].get_download_options()
        assert options[0].info.quantization == "Q4_K_M"
        key = await options[0].download(
            on_progress=lambda u: updates.append(u.downloaded_bytes),
            on_finalize=lambda: finalized.append(True),
        )
    assert key == "google/gemma-3-1b"
    assert updates == sorted(updates) and updates[-1] == 720_425_472
    assert finalized == [True]


async def test_api_token_handshake(emu_auth: Emulator) -> None:
    async with sdk(emu_auth, TOKEN) as client:
        assert [m.identifier for m in await client.llm.list_loaded()] == ["qwen/qwen3-4b"]
    wrong = TOKEN[:-4] + "zzzz"
    with pytest.raises(lms.LMStudioServerError) as refused:
        async with sdk(emu_auth, wrong):
            pass
    assert str(refused.value) == "Authentication failed: Invalid API token"
    with pytest.raises(lms.LMStudioServerError) as guest:
        async with sdk(emu_auth):
            pass
    assert str(guest.value).startswith("Authentication failed: ")
    assert "An LM Studio API token is required" in str(guest.value)


def test_sync_client_in_a_thread(emu: Emulator) -> None:
    results: dict[str, Any] = {}

    def run() -> None:
        with lms.Client(host_of(emu)) as client:
            handle = client.llm.load_new_instance(
                "google/gemma-3-1b", "sync-loaded", ttl=None, config={"seed": 5}
            )
            results["seed"] = handle.get_load_config().seed
            results["loaded"] = [m.identifier for m in client.llm.list_loaded()]
            client.llm.unload("sync-loaded")

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    assert results == {"seed": 5, "loaded": ["qwen/qwen3-4b", "sync-loaded"]}


# -- the wire protocol itself, below the SDK ----------------------------------------------


@contextlib.asynccontextmanager
async def raw_socket(emu: Emulator, namespace: str = "llm") -> AsyncIterator[Any]:
    async with connect(emu.url.replace("http://", "ws://") + f"/{namespace}") as ws:
        await ws.send(
            orjson.dumps({"authVersion": 1, "clientIdentifier": "t", "clientPasskey": "p"})
        )
        assert orjson.loads(await ws.recv()) == {"success": True}
        yield ws


async def test_unknown_endpoint_is_a_communication_warning(emu: Emulator) -> None:
    async with raw_socket(emu) as ws:
        await ws.send(orjson.dumps({"type": "rpcCall", "endpoint": "nope", "callId": 1}))
        warning = orjson.loads(await ws.recv())
        assert warning["type"] == "communicationWarning"
        assert "unknown endpoint" in warning["warning"]
        await ws.send(b"not json")
        assert orjson.loads(await ws.recv())["type"] == "communicationWarning"
        await ws.send(orjson.dumps({"type": "rpcCall", "endpoint": "listLoaded", "callId": 2}))
        reply = orjson.loads(await ws.recv())
        assert reply["type"] == "rpcResult" and reply["callId"] == 2


async def test_cancel_stops_a_load(spawn: Any) -> None:
    slow: Emulator = spawn("--load-delay", "1")
    async with raw_socket(slow) as ws:
        create = {
            "type": "channelCreate",
            "endpoint": "loadModel",
            "channelId": 7,
            "creationParameter": {
                "modelKey": "google/gemma-3-1b",
                "loadConfigStack": {"layers": []},
            },
        }
        await ws.send(orjson.dumps(create))
        resolved = orjson.loads(await ws.recv())
        assert resolved["message"]["type"] == "resolved"
        await ws.send(
            orjson.dumps({"type": "channelSend", "channelId": 7, "message": {"type": "cancel"}})
        )
        ended = orjson.loads(await asyncio.wait_for(ws.recv(), 2))
        assert ended["type"] == "channelError" and ended["channelId"] == 7
        assert ended["error"]["title"] == "Operation cancelled"
    await asyncio.sleep(1.5)  # past the load delay: a load that went on would be done
    loaded = slow.get("/api/v1/models")["models"]
    assert slow.stats()["loads"] == 0
    assert all(m["loaded_instances"] == [] for m in loaded if m["key"] == "google/gemma-3-1b")


async def test_a_bad_handshake_is_refused(emu_auth: Emulator) -> None:
    url = emu_auth.url.replace("http://", "ws://") + "/system"
    async with connect(url) as ws:
        await ws.send(orjson.dumps({"hello": "there"}))
        reply = orjson.loads(await ws.recv())
        assert reply["success"] is False
        assert reply["error"]["title"] == "Unsupported authentication packet"
