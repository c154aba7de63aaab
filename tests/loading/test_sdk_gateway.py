"""Loads through the gateway's SDK surface end to end: `POST /admin/models/load` against an
emulator that speaks LM Studio's SDK websocket, what reached it, what the answer reports, and
how a refused token, a forced but missing SDK, an upstream dying mid-load and a hostile
websocket end."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.loading.conftest import FakeLms, gateway_env, instances, make_fake_lms
from tests.server_fixtures import emulator_fixture
from tests.servers import (
    ServerProcess,
    admin_headers,
    free_port,
    start_emulator,
    start_gateway,
    upstream_requests,
)

GEMMA = "google/gemma-3-1b"
TOKEN = "sk-lm-Zx8cVb7n:Mq1Wn2Eb3Rv4Tc5Yx6Uz"
SPEC_CONFIG: dict[str, Any] = {
    "contextLength": 8192,
    "gpu": {"ratio": 0.5, "layers": 12},
    "cpuThreads": 4,
    "ropeFrequencyBase": 10000,
    "ropeFrequencyScale": 1.0,
}


sdk_emu = emulator_fixture("--load-delay", "0.1", "--no-preload", name="emu-sdk-gw")


@pytest.fixture(scope="module")
def sdk_lms(tmp_path_factory: pytest.TempPathFactory) -> FakeLms:
    return make_fake_lms(tmp_path_factory.mktemp("lms-sdk"))


@pytest.fixture(scope="module")
def sdk_gw(tmp_root: Path, sdk_emu: ServerProcess, sdk_lms: FakeLms) -> Iterator[ServerProcess]:
    server = start_gateway(tmp_root, sdk_emu.url, env=gateway_env(sdk_lms))
    yield server
    server.stop()


@pytest.fixture
def adm(sdk_gw: ServerProcess, sdk_emu: ServerProcess, sdk_lms: FakeLms) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sdk_gw.url, headers=admin_headers(), timeout=60) as client:
        client.post("/admin/models/unload", json={"all": True})
        httpx.post(sdk_emu.url + "/__emulator/reset", timeout=10).raise_for_status()
        httpx.delete(sdk_emu.url + "/__emulator/load-configs", timeout=10)
        sdk_lms.reset()
        yield client


def load_configs(server: ServerProcess) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = httpx.get(
        server.url + "/__emulator/load-configs", timeout=10
    ).json()
    return got


def test_the_spec_load_config_goes_through_the_sdk(
    adm: httpx.Client,
    sdk_emu: ServerProcess,
    sdk_lms: FakeLms,
    sdk_gw: ServerProcess,
    request: pytest.FixtureRequest,
) -> None:
    resp = adm.post(
        "/admin/models/load",
        json={
            "modelKey": GEMMA,
            "identifier": "gemma-sdk",
            "ttlSeconds": 900,
            "activate": True,
            "loadConfig": SPEC_CONFIG,
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["surface"] == "sdk" and body["instanceId"] == "gemma-sdk"
    # exactly this reached LM Studio, over its websocket, and nothing over lms or REST
    [record] = load_configs(sdk_emu)
    assert record["endpoint"] == "loadModel" and record["model"] == GEMMA
    assert record["identifier"] == "gemma-sdk" and record["ttl_ms"] == 900_000
    fields = record["fields"]
    assert fields["llm.load.contextLength"] == 8192
    assert fields["llm.load.llama.acceleration.offloadRatio"] == 0.5
    assert fields["llm.load.llama.ropeFrequencyBase"] == {"checked": True, "value": 10000}
    assert fields["llm.load.llama.ropeFrequencyScale"] == {"checked": True, "value": 1.0}
    assert not any("thread" in key.lower() or "layers" in key for key in fields)
    assert set(fields) <= {
        "llm.load.contextLength",
        "llm.load.llama.acceleration.offloadRatio",
        "load.gpuSplitConfig",  # the SDK always sends its GPU split with a gpu object
        "llm.load.llama.ropeFrequencyBase",
        "llm.load.llama.ropeFrequencyScale",
    }
    assert not [argv for argv in sdk_lms.calls() if argv[:1] == ["load"]]
    up = httpx.Client(base_url=sdk_emu.url, timeout=10)
    request.addfinalizer(up.close)
    assert not [r for r in upstream_requests(up) if r["path"] == "/api/v1/models/load"]
    # what the answer reports, field by field
    assert body["applied"] == {
        "contextLength": 8192,
        "gpu.ratio": 0.5,
        "ropeFrequencyBase": 10000,
        "ropeFrequencyScale": 1.0,
        "ttl": 900,
        "identifier": "gemma-sdk",
        "cpuThreads": 4,
    }
    assert body["notApplied"] == {"gpu.layers": "gpu.ratio was given too, and is what applies"}
    assert "per-request default" in body["appliedAs"]["cpuThreads"]
    assert body["effectiveConfig"]["ropeFrequencyBase"] == 10000
    assert instances(up)["gemma-sdk"]["context_length"] == 8192
    # the same load again: nothing reaches LM Studio
    again = adm.post(
        "/admin/models/load",
        json={
            "modelKey": GEMMA,
            "identifier": "gemma-sdk",
            "ttlSeconds": 900,
            "loadConfig": SPEC_CONFIG,
        },
    ).json()
    assert again["alreadyLoaded"] is True and len(load_configs(sdk_emu)) == 1
    # cpuThreads is sent with each request of that model
    up.delete("/__emulator/requests")
    chat = httpx.post(
        sdk_gw.url + "/v1/chat/completions",
        headers=admin_headers(),
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=30,
    )
    assert chat.status_code == 200, chat.text
    sent = [r for r in upstream_requests(up) if r["path"] == "/v1/chat/completions"][-1]
    assert sent["body"]["cpu_threads"] == 4  # type: ignore[index]


def test_gpu_layers_alone_is_reported_not_guessed(
    adm: httpx.Client, sdk_emu: ServerProcess
) -> None:
    body = adm.post(
        "/admin/models/load", json={"modelKey": GEMMA, "loadConfig": {"gpu": {"layers": 20}}}
    ).json()
    assert body["surface"] == "sdk"
    assert "layer count" in body["notApplied"]["gpu.layers"]
    assert "gpu.layers" not in body["applied"] and "gpu.ratio" not in body["applied"]
    fields = load_configs(sdk_emu)[-1]["fields"]
    assert "llm.load.llama.acceleration.offloadRatio" not in fields


def test_the_sdk_is_chosen_for_an_identifier_and_named(adm: httpx.Client) -> None:
    # lms can set an identifier too; the SDK is better and applies everything asked
    body = adm.post(
        "/admin/models/load",
        json={"modelKey": GEMMA, "instanceId": "mine", "loadConfig": {"seed": 5}},
    ).json()
    assert body["surface"] == "sdk" and body["instanceId"] == "mine"
    assert body["applied"] == {"seed": 5, "identifier": "mine"} and body["notApplied"] == {}
    surfaces = adm.get("/admin/upstream").json()["loadSurfaces"]
    assert surfaces["available"] == ["sdk", "lms", "rest"]
    assert surfaces["fields"]["ropeFrequencyBase"] == {"surfaces": ["sdk"], "available": True}


def test_a_refused_token_is_explained_and_loads_fail_clearly(tmp_root: Path) -> None:
    emu = start_emulator(tmp_root, "--api-token", TOKEN, "--no-preload", name="emu-sdk-token")
    wrong = TOKEN[:-4] + "abcd"
    gw = start_gateway(
        tmp_root,
        emu.url,
        env=gateway_env(None, LMGATE_LMS_PATH="off", LMGATE_UPSTREAM_TOKEN=wrong),
    )
    try:
        with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=60) as adm:
            sdk = adm.get("/admin/upstream").json()["loadSurfaces"]["surfaces"]["sdk"]
            assert sdk["available"] is False
            assert "handshake" in sdk["reason"] and "LMGATE_UPSTREAM_TOKEN" in sdk["reason"]
            for body in ({"modelKey": GEMMA}, {"modelKey": GEMMA, "surface": "sdk"}):
                resp = adm.post("/admin/models/load", json=body)
                assert 400 <= resp.status_code < 600 and resp.status_code != 500, resp.text
                error = resp.json()["error"]
                assert "LMGATE_UPSTREAM_TOKEN" in error["message"]
                assert wrong not in resp.text and TOKEN[7:15] not in resp.text
            state = adm.get("/admin/state").json()
            assert state["activeModel"] is None  # nothing stored as if it had worked
            assert load_configs(emu) == []
    finally:
        gw.stop()
        emu.stop()


def test_a_token_the_sdk_cannot_use_falls_back_to_rest(tmp_root: Path) -> None:
    plain = "plain-upstream-token-0123456789"
    emu = start_emulator(tmp_root, "--api-token", plain, "--no-preload", name="emu-sdk-plain")
    gw = start_gateway(
        tmp_root, emu.url, env=gateway_env(None, LMGATE_LMS_PATH="off", LMGATE_UPSTREAM_TOKEN=plain)
    )
    try:
        with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=60) as adm:
            surfaces = adm.get("/admin/upstream").json()["loadSurfaces"]
            assert surfaces["available"] == ["rest"]
            assert "not an LM Studio API token" in surfaces["surfaces"]["sdk"]["reason"]
            body = adm.post(
                "/admin/models/load", json={"modelKey": GEMMA, "loadConfig": SPEC_CONFIG}
            ).json()
            assert body["surface"] == "rest" and body["applied"]["contextLength"] == 8192
            assert body["notApplied"]["ropeFrequencyBase"].startswith("needs the SDK")
            forced = adm.post("/admin/models/load", json={"modelKey": GEMMA, "surface": "sdk"})
            assert forced.status_code == 400, forced.text
            error = forced.json()["error"]
            assert error["code"] == "load_surface_unavailable" and error["param"] == "surface"
            assert "not an LM Studio API token" in error["message"]
            assert plain not in forced.text
    finally:
        gw.stop()
        emu.stop()


def test_forcing_the_sdk_where_there_is_none_is_a_clear_400(
    tmp_root: Path, emu: ServerProcess
) -> None:
    gw = start_gateway(tmp_root, emu.url, env=gateway_env(None, LMGATE_LMS_PATH="off"))
    try:
        with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=60) as adm:
            surfaces = adm.get("/admin/upstream").json()["loadSurfaces"]
            assert surfaces["surfaces"]["sdk"]["available"] is False
            assert surfaces["surfaces"]["sdk"]["reason"]
            resp = adm.post(
                "/admin/models/load",
                json={"modelKey": GEMMA, "surface": "sdk", "loadConfig": {"seed": 1}},
            )
            assert resp.status_code == 400, resp.text
            error = resp.json()["error"]
            assert error["code"] == "load_surface_unavailable" and error["param"] == "surface"
            assert "'sdk' load surface is not available" in error["message"]
    finally:
        gw.stop()


def _queue_upstream(adm: httpx.Client) -> dict[str, Any]:
    upstream: dict[str, Any] = adm.get("/debug/queue").json()["upstreams"][0]
    return upstream


def test_lm_studio_03_with_the_sdk_loads_on_demand(tmp_root: Path) -> None:
    emu = start_emulator(
        tmp_root, "--version", "0.3", "--no-preload", "--no-jit", name="emu-sdk-03"
    )
    env = gateway_env(None, LMGATE_LMS_PATH="off", LMGATE_ON_DEMAND_LOAD="true")
    gw = start_gateway(tmp_root, emu.url, env=env)
    try:
        with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=60) as adm:
            deadline = time.monotonic() + 20
            while not _queue_upstream(adm)["canLoad"]:
                assert time.monotonic() < deadline, "the scheduler never learned it can load"
                time.sleep(0.2)
            profile = {"loadConfig": {"contextLength": 4096, "ropeFrequencyScale": 0.5}}
            assert adm.put(f"/admin/models/{GEMMA}/profile", json=profile).status_code == 200
            chat = {
                "model": GEMMA,
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
            }
            resp = adm.post("/v1/chat/completions", json=chat)
            assert resp.status_code == 200, resp.text
            [record] = load_configs(emu)
            assert record["fields"]["llm.load.contextLength"] == 4096
            assert record["fields"]["llm.load.llama.ropeFrequencyScale"]["value"] == 0.5
            assert _queue_upstream(adm)["loaded"] == 1
    finally:
        gw.stop()
        emu.stop()


def test_the_upstream_dying_mid_load(tmp_root: Path) -> None:
    emu = start_emulator(tmp_root, "--load-delay", "30", "--no-preload", name="emu-sdk-dies")
    assert emu.proc is not None
    env = gateway_env(None, LMGATE_LMS_PATH="off", LMGATE_ON_DEMAND_LOAD="true")
    gw = start_gateway(tmp_root, emu.url, env=env)
    try:
        with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=60) as adm:
            assert (
                adm.put(
                    f"/admin/models/{GEMMA}/profile", json={"loadConfig": {"seed": 3}}
                ).status_code
                == 200
            )
            answers: list[httpx.Response] = []
            asked = threading.Thread(
                target=lambda: answers.append(
                    adm.post(
                        "/admin/models/load",
                        json={"modelKey": GEMMA, "surface": "sdk", "loadConfig": {"seed": 3}},
                    )
                )
            )
            asked.start()
            deadline = time.monotonic() + 20
            while not httpx.get(emu.url + "/__emulator/load-configs", timeout=5).json():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            os.kill(emu.proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            asked.join(60)
            assert time.monotonic() - killed < 20
            [resp] = answers
            assert resp.status_code in (502, 503), resp.text
            assert "lost while loading" in resp.json()["error"]["message"]
            # no phantom state: nothing loaded, not active, the scheduler not loading
            state = adm.get("/admin/state").json()
            assert state["activeModel"] is None
            listed = adm.get("/admin/models").json()
            assert not [m for m in listed["models"] if m.get("loaded")]
            upstream = _queue_upstream(adm)
            assert upstream["loading"] is None and upstream["loaded"] == 0
            assert adm.get("/health").status_code in (200, 503)
    finally:
        gw.stop()
        emu.stop()


@pytest.mark.parametrize("mode", ["huge", "bigframe", "endless"])
def test_a_hostile_sdk_websocket_is_bounded(tmp_root: Path, mode: str) -> None:
    port = free_port()
    hostile = ServerProcess(
        [sys.executable, "-m", "tests.loading.hostile_sdk", str(port), mode],
        port=port,
        ready_path="/lmstudio-greeting",
        log=tmp_root / f"hostile-{mode}.log",
    ).start()
    env = gateway_env(None, LMGATE_LMS_PATH="off", LMGATE_LOAD_TIMEOUT="60")
    gw = start_gateway(tmp_root, hostile.url, env=env)
    assert gw.proc is not None
    try:
        proc = psutil.Process(gw.proc.pid)
        base = proc.memory_info().rss
        peak = [base]
        done = threading.Event()
        served: list[int] = []

        def watch() -> None:
            with httpx.Client(base_url=gw.url, timeout=10) as other:
                while not done.is_set():
                    peak[0] = max(peak[0], proc.memory_info().rss)
                    served.append(other.get("/health").status_code)
                    time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()
        try:
            with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=90) as adm:
                resp = adm.post("/admin/models/load", json={"modelKey": GEMMA, "surface": "sdk"})
        finally:
            done.set()
            watcher.join()
        elapsed = time.monotonic() - started
        assert resp.status_code == 502, resp.text
        error = resp.json()["error"]
        assert error["code"] == "upstream_answer_too_large" and "MiB" in error["message"]
        assert elapsed < 30
        assert peak[0] - base < 150 * 2**20, f"RSS grew {(peak[0] - base) / 2**20:.0f} MiB"
        assert served and all(code in (200, 503) for code in served)
        assert proc.memory_info().rss - base < 150 * 2**20
    finally:
        gw.stop()
        hostile.stop()
