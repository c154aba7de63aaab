"""Real model management against the emulator (LM Studio 0.4 REST v1, and 0.3 without it)."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.observe.helpers import EventReader
from tests.server_fixtures import emulator_fixture, gateway_fixture
from tests.servers import (
    ADMIN_KEY,
    ServerProcess,
    admin_headers,
    start_emulator,
    start_gateway,
    upstream_requests,
)

GEMMA = "google/gemma-3-1b"
QWEN = "qwen/qwen3-4b"
CHAT = {"messages": [{"role": "user", "content": "hello"}]}
FAST_SYNC = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "0.3"}


emu = emulator_fixture("--load-delay", "0.3", "--no-sdk", name="emu-mm")
gw = gateway_fixture("emu", env=FAST_SYNC)


@pytest.fixture
def up(emu: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, timeout=30) as client:
        client.post("/__emulator/reset")
        yield client


@pytest.fixture
def adm(gw: ServerProcess, up: httpx.Client) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=60) as client:
        client.post("/admin/models/unload", json={"all": True})
        up.post("/__emulator/reset")
        yield client


def _instances(up: httpx.Client, key: str) -> list[dict[str, object]]:
    for model in up.get("/api/v1/models").json()["models"]:
        if model["key"] == key:
            found: list[dict[str, object]] = model["loaded_instances"]
            return found
    raise AssertionError(f"{key} is not in the emulator's catalog")


def _loads(up: httpx.Client) -> int:
    return int(up.get("/__emulator/stats").json()["loads"])


def test_capabilities(adm: httpx.Client, gateway03: ServerProcess) -> None:
    body = adm.get("/admin/upstream").json()
    assert body["kind"] == "lmstudio-0.4+" and body["reachable"] is True
    assert body["capabilities"]["modelManagement"] is True
    assert body["capabilities"]["lmstudio"] is True
    assert isinstance(body["latencyMs"], float)
    old = httpx.get(gateway03.url + "/admin/upstream", headers=admin_headers()).json()
    assert old["kind"] == "lmstudio-0.3"
    assert old["capabilities"]["modelManagement"] is False
    assert old["capabilities"]["nativeV0"] is True


def test_load_applies_echoes_and_reports_what_it_could_not_set(
    adm: httpx.Client, up: httpx.Client
) -> None:
    resp = adm.post(
        "/admin/models/load",
        json={
            "modelKey": GEMMA,
            "activate": False,
            "loadConfig": {
                "contextLength": 8192,
                "flashAttention": True,
                "evalBatchSize": 256,
                "gpu": {"ratio": 0.5},
                "cpuThreads": 4,
                "ropeFrequencyBase": 10000,
                "ttl": 300,
            },
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "loaded" and body["alreadyLoaded"] is False
    assert body["instanceId"] == GEMMA
    assert body["loadTimeSeconds"] > 0
    assert body["applied"]["contextLength"] == 8192
    assert body["applied"]["flashAttention"] is True
    assert body["surface"] == "rest" and body["applied"]["ttl"] == 300
    assert set(body["notApplied"]) == {"gpu.ratio", "ropeFrequencyBase"}
    assert "needs the SDK or lms" in body["notApplied"]["gpu.ratio"]
    assert body["applied"]["cpuThreads"] == 4 and "per-request" in body["appliedAs"]["cpuThreads"]
    sent = [r for r in upstream_requests(up) if r["path"] == "/api/v1/models/load"][-1]["body"]
    assert sent == {
        "model": GEMMA,
        "context_length": 8192,
        "flash_attention": True,
        "eval_batch_size": 256,
        "ttl": 300,
        "echo_load_config": True,
    }
    assert _instances(up, GEMMA)[0]["config"]["context_length"] == 8192  # type: ignore[index]


def test_load_is_idempotent_and_reloads_on_a_new_config(
    adm: httpx.Client, up: httpx.Client
) -> None:
    first = adm.post(
        "/admin/models/load", json={"modelKey": GEMMA, "loadConfig": {"contextLength": 4096}}
    )
    assert first.json()["alreadyLoaded"] is False
    loads = _loads(up)
    again = adm.post(
        "/admin/models/load", json={"modelKey": GEMMA, "loadConfig": {"contextLength": 4096}}
    )
    assert again.json()["alreadyLoaded"] is True and again.json()["status"] == "loaded"
    assert _loads(up) == loads
    other = adm.post(
        "/admin/models/load", json={"modelKey": GEMMA, "loadConfig": {"contextLength": 2048}}
    )
    assert other.json()["replacedInstances"] == [GEMMA]
    instances = _instances(up, GEMMA)
    assert len(instances) == 1 and instances[0]["config"]["context_length"] == 2048  # type: ignore[index]
    extra = adm.post(
        "/admin/models/load",
        json={"modelKey": GEMMA, "newInstance": True, "loadConfig": {"contextLength": 1024}},
    )
    assert extra.json()["instanceId"] == f"{GEMMA}:2"
    assert len(_instances(up, GEMMA)) == 2
    assert adm.get("/admin/state").json()["activeModel"] == GEMMA


def test_unload_by_instance_key_and_all(adm: httpx.Client, up: httpx.Client) -> None:
    adm.post("/admin/models/load", json={"modelKey": GEMMA})
    adm.post("/admin/models/load", json={"modelKey": GEMMA, "newInstance": True})
    one = adm.post("/admin/models/unload", json={"instanceId": f"{GEMMA}:2"}).json()
    assert one["status"] == "unloaded" and one["unloaded"] == [f"{GEMMA}:2"]
    assert one["wasActive"] is False  # another instance of the active model is still there
    by_key = adm.post("/admin/models/unload", json={"modelKey": GEMMA}).json()
    assert by_key["unloaded"] == [GEMMA] and by_key["wasActive"] is True
    assert adm.get("/admin/state").json()["activeModel"] is None
    everything = adm.post("/admin/models/unload", json={"all": True}).json()
    assert everything["unloaded"] == [QWEN]
    assert up.get("/api/v1/models").json()["models"][0]["loaded_instances"] == []
    missing = adm.post("/admin/models/unload", json={"instanceId": "nope"})
    assert missing.status_code == 404


def test_failures_keep_state(adm: httpx.Client) -> None:
    adm.post("/admin/models/activate", json={"modelKey": QWEN})
    unknown = adm.post("/admin/models/load", json={"modelKey": "no/such-model"})
    assert unknown.status_code == 404
    assert "not found" in unknown.json()["error"]["message"]
    refused = adm.post(
        "/admin/models/load", json={"modelKey": GEMMA, "loadConfig": {"contextLength": 10**7}}
    )
    assert refused.status_code == 400
    assert "context_length" in refused.json()["error"]["message"]
    assert adm.get("/admin/state").json()["activeModel"] == QWEN


def test_load_timeout(tmp_root: Path) -> None:
    slow = start_emulator(tmp_root, "--load-delay", "5", "--no-sdk", name="emu-slow")
    gw = start_gateway(tmp_root, slow.url, env={**FAST_SYNC, "LMGATE_LOAD_TIMEOUT": "0.5"})
    try:
        resp = httpx.post(
            gw.url + "/admin/models/load",
            json={"modelKey": GEMMA},
            headers=admin_headers(),
            timeout=30,
        )
        assert resp.status_code == 504
        assert resp.json()["error"]["code"] == "upstream_timeout"
        state = httpx.get(gw.url + "/admin/state", headers=admin_headers()).json()
        assert state["activeModel"] is None
    finally:
        gw.stop()
        slow.stop()


def test_concurrent_loads_are_coalesced(adm: httpx.Client, up: httpx.Client) -> None:
    before = _loads(up)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: adm.post(
                    "/admin/models/load", json={"modelKey": GEMMA, "activate": False}
                ),
                range(8),
            )
        )
    assert all(a.status_code == 200 for a in answers)
    assert {a.json()["instanceId"] for a in answers} == {GEMMA}
    assert _loads(up) == before + 1


def test_sync_reports_changes_made_elsewhere(
    gw: ServerProcess, adm: httpx.Client, up: httpx.Client
) -> None:
    deadline = time.monotonic() + 5
    while adm.get("/admin/upstream").json()["loadedInstances"] != [QWEN]:
        assert time.monotonic() < deadline, "the gateway never saw the emulator's reset"
        time.sleep(0.1)
    reader = EventReader(gw.url, "?types=model_loaded,model_unloaded")
    try:
        reader.next("connected")
        up.post("/__emulator/load", json={"model": GEMMA})
        loaded = reader.next("model_loaded", timeout=3)
        assert loaded["modelKey"] == GEMMA and loaded["source"] == "upstream"
        up.post("/__emulator/unload", json={"instance_id": GEMMA})
        unloaded = reader.next("model_unloaded", timeout=3)
        assert unloaded["instanceId"] == GEMMA and unloaded["source"] == "upstream"
    finally:
        reader.close()
    listing = adm.get("/admin/models").json()
    gemma = next(m for m in listing["models"] if m["key"] == GEMMA)
    assert gemma["loaded"] is False and gemma["type"] == "llm"


def test_listing_merges_gateway_state(adm: httpx.Client) -> None:
    adm.post("/admin/models/activate", json={"modelKey": QWEN, "defaultInference": {"topK": 3}})
    adm.put(f"/admin/models/{GEMMA}/profile", json={"loadConfig": {"contextLength": 1024}})
    listing = adm.get("/admin/models").json()
    assert listing["activeModel"] == QWEN and listing["upstream"] == "lmstudio-0.4+"
    qwen = next(m for m in listing["models"] if m["key"] == QWEN)
    assert qwen["active"] is True and qwen["loaded"] is True
    assert qwen["instances"][0]["config"]["context_length"] == 4096
    gemma = next(m for m in listing["models"] if m["key"] == GEMMA)
    assert gemma["profile"]["loadConfig"] == {"contextLength": 1024}
    adm.delete(f"/admin/models/{GEMMA}/profile")


def test_profiles_defaults_take_precedence_for_their_model(
    adm: httpx.Client, up: httpx.Client
) -> None:
    adm.post(
        "/admin/models/activate",
        json={"modelKey": QWEN, "defaultInference": {"temperature": 0.1, "maxTokens": 5}},
    )
    put = adm.put(f"/admin/models/{GEMMA}/profile", json={"defaultInference": {"temperature": 0.9}})
    assert put.status_code == 200
    adm.post("/v1/chat/completions", json={**CHAT, "model": GEMMA})
    adm.post("/v1/chat/completions", json=CHAT)
    sent = [r["body"] for r in upstream_requests(up) if r["path"] == "/v1/chat/completions"]
    assert sent[-2]["temperature"] == 0.9 and sent[-2]["max_tokens"] == 5  # type: ignore[index]
    assert sent[-1]["model"] == QWEN and sent[-1]["temperature"] == 0.1  # type: ignore[index]
    assert adm.get(f"/admin/models/{GEMMA}/profile").json()["defaultInference"] == {
        "temperature": 0.9
    }
    assert adm.delete(f"/admin/models/{GEMMA}/profile").json()["status"] == "deleted"
    assert adm.get(f"/admin/models/{GEMMA}/profile").status_code == 404


def test_on_demand_load_is_one_load_for_many_requests(
    tmp_root: Path, emu: ServerProcess, up: httpx.Client
) -> None:
    data = tmp_root / "on-demand"
    env = {
        **FAST_SYNC,
        "LMGATE_ON_DEMAND_LOAD": "true",
        "LMGATE_MAX_LOADED_MODELS": "1",
        "LMGATE_MANAGE_ALL_MODELS": "true",  # the emulator's preloaded model is not lmgate's
    }
    gw = start_gateway(tmp_root, emu.url, env=env, data_dir=data)
    try:
        with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=60) as client:
            client.put(
                f"/admin/models/{GEMMA}/profile", json={"loadConfig": {"contextLength": 2048}}
            )
            before = _loads(up)
            with concurrent.futures.ThreadPoolExecutor(20) as pool:
                answers = list(
                    pool.map(
                        lambda _: client.post(
                            "/v1/chat/completions", json={**CHAT, "model": GEMMA}
                        ),
                        range(20),
                    )
                )
            assert [a.status_code for a in answers] == [200] * 20
            assert _loads(up) == before + 1
            instances = _instances(up, GEMMA)
            assert len(instances) == 1 and instances[0]["config"]["context_length"] == 2048  # type: ignore[index]
            assert _instances(up, QWEN) == []  # evicted: at most one model loaded
        gw.stop()
        again = start_gateway(tmp_root, emu.url, env=env, data_dir=data)
        try:
            profile = httpx.get(
                again.url + f"/admin/models/{GEMMA}/profile", headers=admin_headers()
            )
            assert profile.json()["loadConfig"] == {"contextLength": 2048}
        finally:
            again.stop()
    finally:
        gw.stop()


def test_auto_reload_of_the_active_model(
    tmp_root: Path, emu: ServerProcess, up: httpx.Client
) -> None:
    gw = start_gateway(tmp_root, emu.url, env={**FAST_SYNC, "LMGATE_AUTO_RELOAD": "true"})
    reader = EventReader(gw.url, "?types=active_model_unloaded,model_loaded")
    try:
        reader.next("connected")
        httpx.post(
            gw.url + "/admin/models/activate", json={"modelKey": QWEN}, headers=admin_headers()
        )
        time.sleep(0.5)
        up.post("/__emulator/unload", json={"instance_id": QWEN})
        gone = reader.next("active_model_unloaded", timeout=3)
        assert gone["modelKey"] == QWEN and gone["reload"] is True
        back = reader.next("model_loaded", timeout=5)
        assert back["modelKey"] == QWEN and back["source"] == "gateway"
        assert len(_instances(up, QWEN)) == 1
    finally:
        reader.close()
        gw.stop()


def test_old_lm_studio_keeps_the_honest_workflow(admin03: httpx.Client) -> None:
    loaded = admin03.post("/admin/models/load", json={"modelKey": QWEN}).json()
    assert loaded["status"] == "activated" and "workflow" in loaded
    cleared = admin03.post("/admin/models/unload", json={"all": True}).json()
    assert cleared["status"] == "cleared" and cleared["wasActive"] is True
    assert "lms unload --all" in cleared["workflow"]["step2"]
    listing = admin03.get("/admin/models").json()
    assert listing["upstream"] == "lmstudio-0.3"
    assert any(m["key"] == QWEN and m["loaded"] for m in listing["models"])


def _cli(gw: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    env.update({"LMGATE_URL": gw.url, "LMGATE_ADMIN_KEY": ADMIN_KEY, "COLUMNS": "200"})
    return subprocess.run(
        [sys.executable, "-m", "lmgate", "models", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_models_cli(gw: ServerProcess, adm: httpx.Client, up: httpx.Client) -> None:
    loaded = _cli(gw, "load", GEMMA, "--context-length", "2048", "--gpu-ratio", "0.5")
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded" in loaded.stdout and "gpu.ratio" in loaded.stdout
    listing = _cli(gw, "list")
    assert listing.returncode == 0
    assert GEMMA in listing.stdout and "context_length=2048" in listing.stdout
    assert _cli(gw, "activate", QWEN, "--temperature", "0.3").returncode == 0
    assert adm.get("/admin/state").json()["defaultInference"] == {"temperature": 0.3}
    assert _cli(gw, "unload", "--all").returncode == 0
    assert all(not m["loaded_instances"] for m in up.get("/api/v1/models").json()["models"])
    wrong = _cli(gw, "unload")
    assert wrong.returncode == 2
    denied = subprocess.run(
        [sys.executable, "-m", "lmgate", "models", "list", "--url", gw.url, "--admin-key", "bad"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert denied.returncode == 1 and "401" in denied.stderr
