"""The TypeScript edition's admin bodies and model list, against real gateways and emulators."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import ADMIN_KEY, ServerProcess, admin_headers, start_emulator, start_gateway

GEMMA = "google/gemma-3-1b"
QWEN = "qwen/qwen3-4b"


@pytest.fixture(scope="module")
def emu04(tmp_root: Path) -> Iterator[ServerProcess]:
    server = start_emulator(tmp_root, "--no-sdk", name="emu-edition-04")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def emu03(tmp_root: Path) -> Iterator[ServerProcess]:
    server = start_emulator(tmp_root, "--version", "0.3", "--no-sdk", name="emu-edition-03")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def adm04(tmp_root: Path, emu04: ServerProcess) -> Iterator[httpx.Client]:
    gw = start_gateway(tmp_root, emu04.url, env={"LMGATE_ADMIN_KEY": ADMIN_KEY})
    with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=60) as client:
        yield client
    gw.stop()


@pytest.fixture(scope="module")
def adm03(tmp_root: Path, emu03: ServerProcess) -> Iterator[httpx.Client]:
    gw = start_gateway(tmp_root, emu03.url, env={"LMGATE_ADMIN_KEY": ADMIN_KEY})
    with httpx.Client(base_url=gw.url, headers=admin_headers(), timeout=60) as client:
        yield client
    gw.stop()


def test_edition_load_body_is_applied_or_reported(adm04: httpx.Client) -> None:
    adm04.post("/admin/models/unload", json={"all": True})
    resp = adm04.post(
        "/admin/models/load",
        json={
            "modelKey": GEMMA,
            "instanceId": "my-gemma",
            "identifier": "my-gemma",
            "ttlSeconds": 600,
            "activate": True,
            "loadConfig": {"contextLength": 4096},
            "defaultInference": {"temperature": 0.3},
        },
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "loaded" and body["applied"]["contextLength"] == 4096
    assert body["instanceId"] == GEMMA  # LM Studio names the instance itself
    assert body["surface"] == "rest" and body["applied"]["ttl"] == 600  # REST carries a TTL
    assert {"instanceId", "identifier"} <= set(body["notApplied"])
    assert "needs the SDK or lms" in body["notApplied"]["identifier"]
    state = adm04.get("/admin/state").json()
    assert state["activeModel"] == GEMMA
    assert state["loadConfigs"][GEMMA] == {"contextLength": 4096, "ttl": 600}  # for later loads
    # the edition's unload names both the model and the instance
    gone = adm04.post("/admin/models/unload", json={"modelKey": GEMMA, "instanceId": GEMMA})
    assert gone.status_code == 200, gone.text
    assert gone.json()["unloaded"] == [GEMMA]


def test_edition_activate_body_is_accepted(adm04: httpx.Client) -> None:
    resp = adm04.post(
        "/admin/models/activate",
        json={"modelKey": QWEN, "instanceId": "q", "ttlSeconds": 60, "defaultInference": {}},
    )
    assert resp.status_code == 200, resp.text
    assert set(resp.json()["notApplied"]) == {"instanceId", "ttlSeconds"}
    plain = adm04.post("/admin/models/activate", json={"modelKey": QWEN}).json()
    assert "notApplied" not in plain


def test_unknown_fields_are_still_refused(adm04: httpx.Client) -> None:
    for path, body in (
        ("/admin/models/load", {"modelKey": QWEN, "ttlSecond": 5}),
        ("/admin/models/activate", {"modelKey": QWEN, "instanceID": "x"}),
        ("/admin/models/load", {"modelKey": QWEN, "ttlSeconds": -1}),
        ("/admin/models/unload", {"instanceId": "a", "identifier": "b"}),
    ):
        resp = adm04.post(path, json=body)
        assert resp.status_code == 400, (path, body, resp.text)
        assert resp.json()["error"]["type"] == "invalid_request_error"


def test_edition_fields_go_into_the_manual_workflow(adm03: httpx.Client) -> None:
    resp = adm03.post(
        "/admin/models/load",
        json={"modelKey": QWEN, "identifier": "chat", "ttlSeconds": 900},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "activated"
    command = body["workflow"]["step3"]
    assert f"lms load {QWEN}" in command and "--ttl 900" in command
    assert "--identifier chat" in command
    assert set(body["notApplied"]) == {"identifier", "ttlSeconds"}


def test_model_list_in_the_edition_shape_too(adm04: httpx.Client) -> None:
    adm04.post("/admin/models/load", json={"modelKey": QWEN, "activate": True})
    body = adm04.get("/admin/models").json()
    assert body["models"] and len(body["data"]) == len(body["models"])
    by_id = {m["id"]: m for m in body["data"]}
    assert by_id[QWEN]["state"] == "loaded" and by_id[QWEN]["active"] is True
    assert by_id[QWEN]["object"] == "model" and QWEN in by_id[QWEN]["instances"]
    assert any(m["state"] == "not-loaded" for m in body["data"])  # downloaded, not loaded
