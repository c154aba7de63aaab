"""Loads through `lms` and REST v1 against the emulator: what reached the upstream, and what
the answer says was applied."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import psutil

from tests.loading.conftest import FakeLms, gateway_env, instances, make_fake_lms
from tests.servers import (
    ADMIN_KEY,
    ServerProcess,
    admin_headers,
    start_emulator,
    start_gateway,
    upstream_requests,
)

GEMMA = "google/gemma-3-1b"
# The original edition's load config: what REST cannot set needs lms (or the SDK).
SPEC_CONFIG = {
    "contextLength": 8192,
    "gpu": {"ratio": 0.5},
    "cpuThreads": 4,
    "ropeFrequencyBase": 10000,
    "ropeFrequencyScale": 1.0,
}


def _load_calls(lms: FakeLms) -> list[list[str]]:
    return [argv for argv in lms.calls() if argv[:1] == ["load"]]


def test_lms_applies_what_rest_cannot(
    adm: httpx.Client, up: httpx.Client, lms: FakeLms, emu: ServerProcess
) -> None:
    resp = adm.post(
        "/admin/models/load",
        json={
            "modelKey": GEMMA,
            "identifier": "my-gemma",
            "ttlSeconds": 600,
            "activate": True,
            "loadConfig": {**SPEC_CONFIG, "parallel": 2},
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["surface"] == "lms" and body["instanceId"] == "my-gemma"
    assert _load_calls(lms) == [
        [
            "load", GEMMA, "--context-length", "8192", "--gpu", "0.5", "--parallel", "2",
            "--ttl", "600", "--identifier", "my-gemma", "--yes", "--port", str(emu.port),
        ]
    ]  # fmt: skip
    assert body["applied"] == {
        "contextLength": 8192,
        "gpu.ratio": 0.5,
        "parallel": 2,
        "ttl": 600,
        "identifier": "my-gemma",
        "cpuThreads": 4,
    }
    assert "per-request default" in body["appliedAs"]["cpuThreads"]
    assert set(body["notApplied"]) == {"ropeFrequencyBase", "ropeFrequencyScale"}
    assert all(r.startswith("needs the SDK") for r in body["notApplied"].values())
    assert body["effectiveConfig"]["contextLength"] == 8192
    assert instances(up)["my-gemma"]["context_length"] == 8192
    assert instances(up)["my-gemma"]["parallel"] == 2
    # nothing went over REST for the load itself
    assert not [r for r in upstream_requests(up) if r["path"] == "/api/v1/models/load"]
    # the same load again: nothing happens upstream
    again = adm.post(
        "/admin/models/load",
        json={
            "modelKey": GEMMA,
            "identifier": "my-gemma",
            "ttlSeconds": 600,
            "loadConfig": {**SPEC_CONFIG, "parallel": 2},
        },
    ).json()
    assert again["alreadyLoaded"] is True and again["instanceId"] == "my-gemma"
    assert len(_load_calls(lms)) == 1
    # cpuThreads is the model's per-request default now
    assert adm.get("/admin/state").json()["defaultInference"]["cpuThreads"] == 4


def test_cpu_threads_reach_requests_as_a_default(
    adm: httpx.Client, up: httpx.Client, gw: ServerProcess
) -> None:
    resp = adm.post(
        "/admin/models/load",
        json={"modelKey": GEMMA, "activate": True, "loadConfig": {"cpuThreads": 3}},
    )
    assert resp.status_code == 200, resp.text
    up.delete("/__emulator/requests")
    chat = httpx.post(
        gw.url + "/v1/chat/completions",
        headers=admin_headers(),
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        timeout=30,
    )
    assert chat.status_code == 200, chat.text
    sent = [r for r in upstream_requests(up) if r["path"] == "/v1/chat/completions"][-1]
    assert sent["body"]["cpu_threads"] == 3 and sent["body"]["model"] == GEMMA  # type: ignore[index]


def test_rest_gets_only_its_fields_and_reports_from_the_echo(
    adm: httpx.Client, up: httpx.Client, lms: FakeLms
) -> None:
    resp = adm.post(
        "/admin/models/load",
        json={
            "modelKey": GEMMA,
            "surface": "rest",
            "activate": False,
            "loadConfig": {**SPEC_CONFIG, "flashAttention": False, "parallel": 3, "ttl": 120},
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["surface"] == "rest" and _load_calls(lms) == []
    sent = [r for r in upstream_requests(up) if r["path"] == "/api/v1/models/load"][-1]["body"]
    assert sent == {
        "model": GEMMA,
        "context_length": 8192,
        "flash_attention": False,
        "parallel": 3,
        "ttl": 120,
        "echo_load_config": True,
    }
    assert body["applied"] == {
        "contextLength": 8192,
        "flashAttention": False,
        "parallel": 3,
        "ttl": 120,
        "cpuThreads": 4,
    }
    assert set(body["notApplied"]) == {"gpu.ratio", "ropeFrequencyBase", "ropeFrequencyScale"}
    assert body["notApplied"]["gpu.ratio"].startswith("needs the SDK or lms")
    assert body["effectiveConfig"]["evalBatchSize"] == 512  # the echo, defaults included


def test_choice_prefers_the_surface_that_applies_everything(
    adm: httpx.Client, up: httpx.Client, lms: FakeLms
) -> None:
    # REST alone sets flash attention and the batch size: it is chosen, lms is not run
    resp = adm.post(
        "/admin/models/load",
        json={"modelKey": GEMMA, "loadConfig": {"contextLength": 4096, "flashAttention": True}},
    )
    assert resp.json()["surface"] == "rest" and _load_calls(lms) == []
    # a GPU ratio and a batch size: no surface here sets both; lms and REST tie, lms is better
    resp = adm.post(
        "/admin/models/load",
        json={"modelKey": GEMMA, "loadConfig": {"gpu": {"ratio": "max"}, "evalBatchSize": 128}},
    )
    body = resp.json()
    assert body["surface"] == "lms", body
    assert body["replacedInstances"] == [GEMMA]
    assert _load_calls(lms)[0][2:4] == ["--gpu", "max"]
    assert body["notApplied"]["evalBatchSize"].startswith("needs the SDK or REST")


def test_what_ps_shows_otherwise_is_not_applied(
    adm: httpx.Client, up: httpx.Client, lms: FakeLms
) -> None:
    lms.set(context_cap=2048)
    body = adm.post(
        "/admin/models/load",
        json={"modelKey": GEMMA, "loadConfig": {"contextLength": 8192, "gpu": {"ratio": 0.25}}},
    ).json()
    assert body["surface"] == "lms"
    assert body["applied"] == {"gpu.ratio": 0.25}
    assert "2048" in body["notApplied"]["contextLength"]


def test_gpu_layers_without_a_layer_count_is_reported(adm: httpx.Client, lms: FakeLms) -> None:
    body = adm.post(
        "/admin/models/load", json={"modelKey": GEMMA, "loadConfig": {"gpu": {"layers": 20}}}
    ).json()
    assert "layer count" in body["notApplied"]["gpu.layers"]
    assert "gpu.layers" not in body["applied"]


def test_admin_upstream_lists_surfaces_and_fields(adm: httpx.Client) -> None:
    surfaces = adm.get("/admin/upstream").json()["loadSurfaces"]
    assert surfaces["available"] == ["lms", "rest"]
    assert surfaces["surfaces"]["lms"] == {"available": True}
    fields = surfaces["fields"]
    assert fields["gpu.ratio"] == {"surfaces": ["sdk", "lms"], "available": True}
    assert fields["ropeFrequencyBase"] == {"surfaces": ["sdk"], "available": False}
    assert fields["flashAttention"]["surfaces"] == ["sdk", "rest"]
    assert fields["cpuThreads"]["available"] is True


def test_lms_failing_mid_load_leaves_no_instance(
    adm: httpx.Client, up: httpx.Client, lms: FakeLms
) -> None:
    lms.set(fail="midload", exit=3, secret=ADMIN_KEY)
    resp = adm.post(
        "/admin/models/load",
        json={"modelKey": GEMMA, "identifier": "doomed", "loadConfig": {"gpu": {"ratio": 1}}},
    )
    assert resp.status_code == 502, resp.text
    error = resp.json()["error"]
    assert error["code"] == "model_load_failed" and error["type"] == "upstream_error"
    assert "status 3" in error["message"] and "runtime crashed" in error["message"]
    assert ADMIN_KEY not in resp.text and "\x1b" not in error["message"]
    assert "doomed" not in instances(up)  # what the broken load made was unloaded
    assert ["unload", "doomed", "--port", str(up.base_url.port)] in lms.calls()
    listed = {m["key"]: m for m in adm.get("/admin/models").json()["models"]}
    assert listed[GEMMA]["loaded"] is False
    lms.set(fail="notfound")
    missing = adm.post(
        "/admin/models/load", json={"modelKey": GEMMA, "loadConfig": {"gpu": {"ratio": 1}}}
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_lms_missing_falls_back_to_rest_and_refuses_a_forced_lms(
    tmp_root: Path, emu: ServerProcess, up: httpx.Client
) -> None:
    env = gateway_env(None, LMGATE_LMS_PATH=str(tmp_root / "no-such" / "lms"))
    gw = start_gateway(tmp_root, emu.url, env=env)
    try:
        with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=60) as adm:
            surfaces = adm.get("/admin/upstream").json()["loadSurfaces"]
            assert surfaces["available"] == ["rest"]
            assert "no lms executable" in surfaces["surfaces"]["lms"]["reason"]
            forced = adm.post("/admin/models/load", json={"modelKey": GEMMA, "surface": "lms"})
            assert forced.status_code == 400, forced.text
            assert forced.json()["error"]["code"] == "load_surface_unavailable"
            assert forced.json()["error"]["param"] == "surface"
            body = adm.post(
                "/admin/models/load", json={"modelKey": GEMMA, "loadConfig": SPEC_CONFIG}
            ).json()
            assert body["surface"] == "rest" and "gpu.ratio" in body["notApplied"]
            adm.post("/admin/models/unload", json={"all": True})
    finally:
        gw.stop()


def test_a_hanging_lms_is_killed_at_the_load_timeout(
    tmp_root: Path, emu: ServerProcess, up: httpx.Client
) -> None:
    fake = make_fake_lms(tmp_root / "lms-hang")
    gw = start_gateway(tmp_root, emu.url, env=gateway_env(fake, LMGATE_LOAD_TIMEOUT="2"))
    try:
        fake.set(fail="hang")
        with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=60) as adm:
            started = time.monotonic()
            resp = adm.post("/admin/models/load", json={"modelKey": GEMMA, "surface": "lms"})
            elapsed = time.monotonic() - started
            assert resp.status_code == 504, resp.text
            assert resp.json()["error"]["code"] == "model_load_timeout"
            assert elapsed < 20
            hung = [
                pid
                for argv, pid in zip(fake.calls(), fake.pids(), strict=True)
                if argv[:1] == ["load"]
            ]
            assert hung and not any(psutil.pid_exists(p) for p in hung)
            # a normal client is served meanwhile and after
            assert adm.get("/admin/state").status_code == 200
    finally:
        gw.stop()


def test_lm_studio_03_loads_with_lms_and_answers_honestly_without(
    tmp_root: Path, lms: FakeLms
) -> None:
    lms.reset()
    emu03 = start_emulator(
        tmp_root, "--version", "0.3", "--no-preload", "--no-sdk", name="emu-loading-03"
    )
    with_lms = start_gateway(tmp_root, emu03.url, env=gateway_env(lms))
    without = start_gateway(tmp_root, emu03.url, env=gateway_env(None, LMGATE_LMS_PATH="off"))
    try:
        with httpx.Client(base_url=without.url, headers=admin_headers(), timeout=60) as adm:
            surfaces = adm.get("/admin/upstream").json()["loadSurfaces"]
            assert surfaces["available"] == []
            assert "REST v1" in surfaces["surfaces"]["rest"]["reason"]
            body = adm.post(
                "/admin/models/load", json={"modelKey": GEMMA, "loadConfig": SPEC_CONFIG}
            ).json()
            assert body["status"] in ("activated", "stored") and "workflow" in body
            forced = adm.post("/admin/models/load", json={"modelKey": GEMMA, "surface": "rest"})
            assert forced.status_code == 400
            assert forced.json()["error"]["code"] == "load_surface_unavailable"
        with httpx.Client(base_url=with_lms.url, headers=admin_headers(), timeout=60) as adm:
            resp = adm.post(
                "/admin/models/load", json={"modelKey": GEMMA, "loadConfig": SPEC_CONFIG}
            )
            assert resp.status_code == 200, resp.text
            body = resp.json()
            assert body["surface"] == "lms" and body["instanceId"] == GEMMA
            assert body["applied"]["gpu.ratio"] == 0.5
            gone = adm.post("/admin/models/unload", json={"modelKey": GEMMA})
            assert gone.status_code == 200, gone.text
            assert ["unload", GEMMA, "--port", str(emu03.port)] in lms.calls()
    finally:
        with_lms.stop()
        without.stop()
        emu03.stop()


def test_the_scheduler_hears_of_a_failed_lms_load(
    tmp_root: Path, emu: ServerProcess, up: httpx.Client
) -> None:
    fake = make_fake_lms(tmp_root / "lms-on-demand")
    env = gateway_env(fake, LMGATE_ON_DEMAND_LOAD="true")
    gw = start_gateway(tmp_root, emu.url, env=env)
    try:
        with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=60) as adm:
            profile = {"loadConfig": {"contextLength": 4096, "gpu": {"ratio": 0.5}}}
            assert adm.put(f"/admin/models/{GEMMA}/profile", json=profile).status_code == 200
            fake.set(fail="before", exit=4)
            chat = {"model": GEMMA, "messages": [{"role": "user", "content": "hi"}]}
            started = time.monotonic()
            first = adm.post("/v1/chat/completions", json=chat)
            assert first.status_code >= 500, first.text
            assert "error" in first.json()
            assert time.monotonic() - started < 30
            assert _load_calls(fake) and GEMMA not in instances(up)
            # the failure is remembered: the next request is refused without another load
            again = adm.post("/v1/chat/completions", json=chat)
            assert again.status_code >= 500 and len(_load_calls(fake)) == 1
    finally:
        gw.stop()
