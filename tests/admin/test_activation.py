"""Activation checks the upstream has the model; a load replaces the active model only when
asked to, or when none is active."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.usefixtures("no_active_model")

QWEN, GEMMA = "qwen/qwen3-4b", "google/gemma-3-1b"


@pytest.mark.parametrize("typo", ["qwen/qwen3-4", "Qwen/Qwen3-4B", "qwen3-4b", "google/gemma-3-1"])
def test_an_unknown_model_is_refused_with_close_matches(admin: httpx.Client, typo: str) -> None:
    refused = admin.post("/admin/models/activate", json={"modelKey": typo})
    assert refused.status_code == 404, refused.text
    error = refused.json()["error"]
    assert error["code"] == "model_not_found"
    assert "'qwen/qwen3-4b'" in error["message"] or "'google/gemma-3-1b'" in error["message"]
    assert '"force": true' in error["message"]
    assert admin.get("/admin/state").json()["activeModel"] is None


def test_a_name_like_nothing_lists_what_there_is(admin: httpx.Client) -> None:
    refused = admin.post("/admin/models/activate", json={"modelKey": "zzzzzzzzzzzz"})
    assert refused.status_code == 404
    assert QWEN in refused.json()["error"]["message"]


def test_force_activates_anyway(admin: httpx.Client) -> None:
    forced = admin.post("/admin/models/activate", json={"modelKey": "later/model", "force": True})
    assert forced.status_code == 200 and forced.json()["status"] == "activated"
    assert admin.get("/admin/state").json()["activeModel"] == "later/model"
    admin.post("/admin/models/activate", json={"modelKey": QWEN})


def test_known_models_and_instances_activate(admin: httpx.Client) -> None:
    assert admin.post("/admin/models/activate", json={"modelKey": QWEN}).status_code == 200
    assert admin.get("/admin/state").json()["activeModel"] == QWEN


def test_load_keeps_another_active_model_unless_asked(admin: httpx.Client) -> None:
    first = admin.post("/admin/models/load", json={"modelKey": QWEN}).json()
    assert first["activated"] is True  # nothing was active
    second = admin.post("/admin/models/load", json={"modelKey": GEMMA}).json()
    assert second["activated"] is False and "Not activated" in second["message"]
    assert QWEN in second["message"]
    assert admin.get("/admin/state").json()["activeModel"] == QWEN
    switched = admin.post("/admin/models/load", json={"modelKey": GEMMA, "activate": True})
    assert switched.json()["activated"] is True
    assert admin.get("/admin/state").json()["activeModel"] == GEMMA
    admin.post("/admin/models/unload", json={"modelKey": GEMMA})
