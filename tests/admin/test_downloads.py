"""Model downloads through the gateway, against the emulator's fake LM Studio 0.4 downloads."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.observe.helpers import EventReader, eventually
from tests.server_fixtures import emulator_fixture, gateway_fixture
from tests.servers import (
    ADMIN_KEY,
    API_KEY,
    ServerProcess,
    admin_headers,
)

ENV = {
    "LMGATE_ADMIN_KEY": ADMIN_KEY,
    "LMGATE_API_KEYS": API_KEY,
    "LMGATE_DOWNLOAD_POLL_SECONDS": "0.2",
    "LMGATE_SYNC_INTERVAL": "0.5",
}
WATCH = "?types=model_download_*&lastEventId=0"  # from the start: nothing is missed


# 100 MB at 40 MB/s: about 2.5 s per download
emu = emulator_fixture(
    "--download-speed", "40000000", "--download-size", "100000000", name="emu-dl"
)
# 10 GB at 50 MB/s: never done within a test
slow_emu = emulator_fixture(
    "--download-speed", "50000000", "--download-size", "10000000000", name="emu-dl2"
)
gw = gateway_fixture("emu", env=ENV)
slow_gw = gateway_fixture("slow_emu", env=ENV)


def _admin(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=admin_headers(), timeout=30)


def _keys(server: ServerProcess) -> list[str]:
    with _admin(server) as client:
        return [m["key"] for m in client.get("/admin/models").json()["models"]]


def test_download_progresses_and_completes(gw: ServerProcess) -> None:
    events = EventReader(gw.url, WATCH)
    with _admin(gw) as client:
        started = time.monotonic()
        answer = client.post("/admin/models/download", json={"model": "acme/tiny-1b"})
        assert answer.status_code == 200, answer.text
        job = answer.json()
        assert job["status"] == "downloading" and job["id"].startswith("dl_")
        assert job["model"] == "acme/tiny-1b" and job["upstreamJobId"].startswith("job_")
        assert job["totalBytes"] == 100_000_000
        progress = events.until("model_download_progress", lambda e: e["downloadId"] == job["id"])
        assert progress["modelKey"] == "acme/tiny-1b"
        assert 0 <= progress["downloadedBytes"] <= progress["totalBytes"] == 100_000_000
        assert progress["bytesPerSecond"] == 40_000_000
        assert progress["etaSeconds"] is not None and 0 <= progress["etaSeconds"] <= 3.5
        assert progress["status"] == "downloading" and 0 <= progress["progress"] <= 1
        done = events.until("model_download_complete", lambda e: e["downloadId"] == job["id"])
        assert done["status"] == "completed" and done["downloadedBytes"] == 100_000_000
        assert done["progress"] == 1.0 and done["finishedAt"] is not None
        assert time.monotonic() - started < 20
        listed = client.get("/admin/models/downloads").json()["downloads"]
        assert any(j["id"] == job["id"] and j["status"] == "completed" for j in listed)
        assert client.get(f"/admin/models/downloads/{job['id']}").json()["status"] == "completed"
        # the downloaded model is offered at once
        assert "acme/tiny-1b" in _keys(gw)
        again = client.post("/admin/models/download", json={"model": "acme/tiny-1b"}).json()
        assert again["status"] == "already_downloaded"
    events.close()


def test_already_downloaded_and_hugging_face_url(gw: ServerProcess) -> None:
    with _admin(gw) as client:
        have = client.post("/admin/models/download", json={"modelKey": "qwen/qwen3-4b"}).json()
        assert have["status"] == "already_downloaded" and have["finishedAt"] is not None
        url = "https://huggingface.co/acme/hf-model-GGUF"
        job = client.post(
            "/admin/models/download", json={"model": url, "quantization": "Q4_K_M"}
        ).json()
        assert job["status"] == "downloading" and job["quantization"] == "Q4_K_M"
        # asking again while it runs is the same download
        same = client.post("/admin/models/download", json={"model": url, "quantization": "Q4_K_M"})
        assert same.json()["id"] == job["id"]
        eventually(lambda: "acme/hf-model-GGUF" in _keys(gw), timeout=20)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"model": ""},
        {"model": "no-slash"},
        {"model": "a/b", "modelKey": "a/b"},
        {"model": "a/b\nc"},
        {"model": "a/" + "b" * 2000},
        {"model": "ftp://huggingface.co/x/y"},
        {"model": "a/b", "quantization": "q4; rm -rf"},
        {"model": "a/b", "extra": 1},
        {"model": 5},
    ],
)
def test_bad_bodies_are_400(gw: ServerProcess, body: dict[str, Any]) -> None:
    with _admin(gw) as client:
        answer = client.post("/admin/models/download", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_admin_scope_and_unknown_ids(gw: ServerProcess) -> None:
    inference = {"Authorization": f"Bearer {API_KEY}"}
    answer = httpx.post(gw.url + "/admin/models/download", json={"model": "a/b"}, headers=inference)
    assert answer.status_code == 403
    assert httpx.get(gw.url + "/admin/models/downloads", headers=inference).status_code == 403
    with _admin(gw) as client:
        for method in ("GET", "DELETE"):
            missing = client.request(method, "/admin/models/downloads/dl_nope")
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "download_not_found"
        long = client.get("/admin/models/downloads/" + "x" * 500)
        assert long.status_code == 400


def test_cancel_halfway_stops_following_it(slow_gw: ServerProcess, slow_emu: ServerProcess) -> None:
    events = EventReader(slow_gw.url, WATCH)
    with _admin(slow_gw) as client:
        job = client.post("/admin/models/download", json={"model": "acme/huge-70b"}).json()
        seen = events.until(
            "model_download_progress",
            lambda e: e["downloadId"] == job["id"] and e["downloadedBytes"] > 0,
        )
        assert seen["downloadedBytes"] < seen["totalBytes"]
        cancelled = client.delete(f"/admin/models/downloads/{job['id']}")
        assert cancelled.status_code == 200
        body = cancelled.json()
        assert body["status"] == "cancelled" and body["upstreamStopped"] is False
        assert "LM Studio" in body["message"] and body["finishedAt"] is not None
        event = events.until("model_download_cancelled", lambda e: e["downloadId"] == job["id"])
        assert event["status"] == "cancelled"
        # no more progress of it, and it stays cancelled
        later = [e for e in events.drain(1.0) if e[1].get("downloadId") == job["id"]]
        assert later == []
        assert client.get(f"/admin/models/downloads/{job['id']}").json()["status"] == "cancelled"
        again = client.post(f"/admin/models/downloads/{job['id']}/cancel")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "download_finished"
        assert "acme/huge-70b" not in _keys(slow_gw)
        # starting it again is a new download
        fresh = client.post("/admin/models/download", json={"model": "acme/huge-70b"}).json()
        assert fresh["id"] != job["id"] and fresh["status"] == "downloading"
        client.delete(f"/admin/models/downloads/{fresh['id']}")
    events.close()


def test_cancelled_or_failed_in_lm_studio(slow_gw: ServerProcess, slow_emu: ServerProcess) -> None:
    events = EventReader(slow_gw.url, WATCH)
    with _admin(slow_gw) as client:
        for model, hook in (("acme/fails-7b", "fail"), ("acme/stopped-7b", "cancel")):
            job = client.post("/admin/models/download", json={"model": model}).json()
            events.until("model_download_progress", lambda e, j=job: e["downloadId"] == j["id"])
            httpx.post(f"{slow_emu.url}/__emulator/downloads/{job['upstreamJobId']}/{hook}")
            failed = events.until(
                "model_download_failed", lambda e, j=job: e["downloadId"] == j["id"]
            )
            assert failed["status"] == "failed" and failed["error"]
            assert model not in _keys(slow_gw)
            assert client.get(f"/admin/models/downloads/{job['id']}").json()["status"] == "failed"
    events.close()


def test_finished_jobs_are_bounded(gw: ServerProcess) -> None:
    with _admin(gw) as client:
        for _ in range(60):
            client.post("/admin/models/download", json={"model": "google/gemma-3-1b"})
        listed = client.get("/admin/models/downloads").json()["downloads"]
    assert len(listed) <= 51  # the last 50 finished, plus any still running


def test_upstream_without_download_api_is_501(gateway03: ServerProcess) -> None:
    answer = httpx.post(
        gateway03.url + "/admin/models/download",
        json={"model": "qwen/qwen3-4b"},
        headers=admin_headers(),
    )
    assert answer.status_code == 501
    error = answer.json()["error"]
    assert error["code"] == "not_implemented"
    assert "/api/v1/models/download" in error["message"] and "0.4" in error["message"]
