"""REST v0 and v1: model state, load/unload with `:N` instances, native chat."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

from lmgate.emulator.generation import NATURAL_TOKENS, Prompt, complete

if TYPE_CHECKING:
    from tests.emulator.conftest import Emulator

QWEN, GEMMA, NOMIC = "qwen/qwen3-4b", "google/gemma-3-1b", "text-embedding-nomic-embed-text-v1.5"


def v1_instances(emu: Emulator, key: str) -> list[dict[str, Any]]:
    (model,) = [m for m in emu.get("/api/v1/models")["models"] if m["key"] == key]
    instances: list[dict[str, Any]] = model["loaded_instances"]
    return instances


async def test_v0_models_and_single_model(http: httpx.AsyncClient) -> None:
    rows = (await http.get("/api/v0/models")).json()["data"]
    by_id = {row["id"]: row for row in rows}
    assert by_id[QWEN]["state"] == "loaded" and by_id[QWEN]["loaded_context_length"] == 4096
    assert by_id[GEMMA]["state"] == "not-loaded" and "loaded_context_length" not in by_id[GEMMA]
    assert by_id[NOMIC]["type"] == "embeddings" and by_id[NOMIC]["max_context_length"] == 2048
    assert by_id[QWEN]["capabilities"] == ["tool_use"]
    single = await http.get(f"/api/v0/models/{QWEN}")
    assert single.json() == by_id[QWEN]
    missing = await http.get("/api/v0/models/nobody/nothing")
    assert missing.status_code == 404 and "error" in missing.json()


async def test_v0_chat_has_stats_and_jit_load_changes_state(http: httpx.AsyncClient) -> None:
    body = {"model": GEMMA, "messages": [{"role": "user", "content": "hello v0"}]}
    answer = (await http.post("/api/v0/chat/completions", json=body)).json()
    assert answer["model"] == GEMMA
    assert answer["stats"]["stop_reason"] == "eosFound"
    assert answer["stats"]["tokens_per_second"] > 0
    assert answer["model_info"]["context_length"] == 4096
    assert answer["runtime"]["supported_formats"] == ["gguf"]
    state = (await http.get(f"/api/v0/models/{GEMMA}")).json()["state"]
    assert state == "loaded"
    stats = (await http.get("/__emulator/stats")).json()
    assert stats["loads"] == 1

    v1 = (await http.post("/v1/chat/completions", json=body)).json()
    assert v1["stats"] == {} and "model_info" not in v1


async def test_v1_load_creates_numbered_instances(emu: Emulator, http: httpx.AsyncClient) -> None:
    first = await http.post("/api/v1/models/load", json={"model": QWEN, "context_length": 8192})
    assert first.status_code == 200
    assert first.json()["instance_id"] == f"{QWEN}:2"
    assert first.json()["status"] == "loaded" and first.json()["type"] == "llm"
    assert first.json()["load_time_seconds"] >= 0.04
    assert "load_config" not in first.json()
    third = await http.post(
        "/api/v1/models/load",
        json={"model": QWEN, "flash_attention": False, "parallel": 2, "echo_load_config": True},
    )
    assert third.json()["instance_id"] == f"{QWEN}:3"
    assert third.json()["load_config"]["flash_attention"] is False
    assert third.json()["load_config"]["parallel"] == 2
    instances = v1_instances(emu, QWEN)
    assert [i["id"] for i in instances] == [QWEN, f"{QWEN}:2", f"{QWEN}:3"]
    assert instances[1]["config"]["context_length"] == 8192

    body = {"model": f"{QWEN}:2", "messages": [{"role": "user", "content": "x"}]}
    assert (await http.post("/v1/chat/completions", json=body)).json()["model"] == f"{QWEN}:2"

    gone = await http.post("/api/v1/models/unload", json={"instance_id": f"{QWEN}:2"})
    assert gone.json() == {"instance_id": f"{QWEN}:2"}
    assert [i["id"] for i in v1_instances(emu, QWEN)] == [QWEN, f"{QWEN}:3"]
    again = await http.post("/api/v1/models/load", json={"model": QWEN})
    assert again.json()["instance_id"] == f"{QWEN}:2"
    assert emu.stats()["loads"] == 3 and emu.stats()["unloads"] == 1


async def test_v1_load_rejects_unknown_keys_and_models(http: httpx.AsyncClient) -> None:
    bad = await http.post("/api/v1/models/load", json={"model": QWEN, "gpu": "max", "seed": 1})
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert error["type"] == "invalid_request" and error["code"] == "unrecognized_keys"
    assert "'gpu'" in error["message"] and "'seed'" in error["message"]

    missing = await http.post("/api/v1/models/load", json={"model": "acme/nothing"})
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "model_not_found"

    embedded = await http.post(
        "/api/v1/models/load", json={"model": NOMIC, "echo_load_config": True}
    )
    assert embedded.json()["type"] == "embedding"
    assert embedded.json()["load_config"] == {"context_length": 2048}

    unknown = await http.post("/api/v1/models/unload", json={"instance_id": "nope"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "model_not_found"
    no_id = await http.post("/api/v1/models/unload", json={})
    assert no_id.status_code == 400
    assert no_id.json()["error"]["code"] == "missing_required_parameter"


async def test_v1_chat_non_streaming_and_streaming(http: httpx.AsyncClient) -> None:
    body = {"model": GEMMA, "input": "native hello", "system_prompt": "be nice"}
    answer = (await http.post("/api/v1/chat", json=body)).json()
    assert answer["model_instance_id"] == GEMMA
    assert answer["output"] == [
        {"type": "message", "content": complete(Prompt("native hello", 0), max_tokens=None).text}
    ]
    assert answer["stats"]["input_tokens"] == 4
    assert answer["stats"]["total_output_tokens"] == NATURAL_TOKENS
    assert "model_load_time_seconds" in answer["stats"]  # this request JIT-loaded gemma
    assert answer["response_id"].startswith("resp_") and len(answer["response_id"]) == 53

    stream_body = {**body, "stream": True, "max_output_tokens": 3, "store": False}
    async with http.stream("POST", "/api/v1/chat", json=stream_body) as response:
        raw = (await response.aread()).decode()
    events = [f.split("\n")[0].removeprefix("event: ") for f in raw.split("\n\n") if f]
    assert events[0] == "chat.start" and events[-1] == "chat.end"
    assert "model_load.start" not in events  # already loaded now
    assert events.count("message.delta") == 3
    end = json.loads(raw.split("\n\n")[-2].split("data: ", 1)[1])
    assert end["result"]["stats"]["total_output_tokens"] == 3
    assert "response_id" not in end["result"]


async def test_v1_chat_stream_reports_jit_load(http: httpx.AsyncClient) -> None:
    body = {"model": GEMMA, "input": "load me", "stream": True, "context_length": 2048}
    async with http.stream("POST", "/api/v1/chat", json=body) as response:
        raw = (await response.aread()).decode()
    assert "event: model_load.start" in raw and "event: model_load.end" in raw
    v0 = (await http.get(f"/api/v0/models/{GEMMA}")).json()
    assert v0["loaded_context_length"] == 2048
    missing = await http.post("/api/v1/chat", json={"input": "x"})
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "missing_required_parameter"
