"""`/debug/requests`: in-flight and finished requests, and cancelling one for real (the
upstream stops generating)."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import openai
import pytest

from tests.observe.conftest import KEYS, client, key_name
from tests.observe.helpers import eventually
from tests.servers import ServerProcess

QWEN = "qwen/qwen3-4b"
USER = [{"role": "user", "content": "write a long essay"}]
SLOW = {"x-emulator-token-delay": "0.1"}


def _in_flight(admin: httpx.Client, rid: str) -> dict[str, Any] | None:
    for entry in admin.get("/debug/requests").json()["inFlight"]:
        if entry["requestId"] == rid:
            found: dict[str, Any] = entry
            return found
    return None


def _stats(direct: httpx.Client) -> dict[str, int]:
    stats: dict[str, int] = direct.get("/__emulator/stats").json()
    return stats


def _usage(admin: httpx.Client, key: str) -> dict[str, int]:
    totals: dict[str, int] = admin.get("/admin/usage", params={"key": key}).json()["totals"]
    return totals


def _says_content(line: str) -> bool:
    choices = json.loads(line.removeprefix("data: ")).get("choices") or [{}]
    return bool(choices[0].get("delta", {}).get("content"))


def test_cancelling_a_stream_stops_the_upstream_and_tells_the_client(
    observed: ServerProcess, obs_admin: httpx.Client, direct: httpx.Client
) -> None:
    before = _stats(direct)["cancelled_streams"]
    usage_before = _usage(obs_admin, key_name(4))
    lines: list[str] = []

    def stream() -> None:
        with (
            client(observed, KEYS[4]) as user,
            user.stream(
                "POST",
                "/v1/chat/completions",
                json={"model": QWEN, "messages": USER, "max_tokens": 300, "stream": True},
                headers={**SLOW, "X-Request-ID": "cancel-stream-1"},
            ) as resp,
        ):
            lines.extend(line for line in resp.iter_lines() if line.startswith("data: "))

    worker = threading.Thread(target=stream)
    worker.start()
    live = eventually(
        lambda: (e := _in_flight(obs_admin, "cancel-stream-1")) and e["tokensStreamed"] >= 2 and e
    )
    assert live["key"] == key_name(4) and live["model"] == QWEN and live["streamed"] is True
    assert live["ageMs"] > 0 and live["status"] == 200 and live["ttftMs"] > 0
    resp = obs_admin.delete("/debug/requests/cancel-stream-1")
    assert resp.status_code == 202 and resp.json()["cancelled"] == 1
    worker.join(10)
    assert not worker.is_alive()
    assert '"code":"request_cancelled"' in lines[-1] and len(lines) < 100
    stats = eventually(
        lambda: (
            (s := _stats(direct))["cancelled_streams"] > before and s["active_streams"] == 0 and s
        )
    )
    assert stats["cancelled_streams"] == before + 1
    done = obs_admin.get("/debug/requests").json()["completed"]
    entry = next(e for e in done if e["requestId"] == "cancel-stream-1")
    assert entry["cancelled"] == "cancelled by an operator" and entry["error"]
    assert _in_flight(obs_admin, "cancel-stream-1") is None
    # No usage chunk came: the tokens the client got are counted from the frames, as estimated.
    relayed = sum(_says_content(line) for line in lines[:-1])
    assert relayed >= 2 and entry["tokensOut"] == relayed and entry["tokensEstimated"] is True
    usage = _usage(obs_admin, key_name(4))
    assert usage["tokensOut"] - usage_before["tokensOut"] == relayed
    assert usage["tokensOutEstimated"] - usage_before["tokensOutEstimated"] == relayed
    assert usage["unreported"] - usage_before["unreported"] == 1


def test_cancelling_before_the_answer_returns_an_error(
    observed: ServerProcess, obs_admin: httpx.Client
) -> None:
    result: dict[str, httpx.Response] = {}

    def ask() -> None:
        with client(observed, KEYS[4]) as user:
            result["resp"] = user.post(
                "/v1/chat/completions",
                json={"model": QWEN, "messages": USER, "max_tokens": 2},
                headers={"x-emulator-delay": "20", "X-Request-ID": "cancel-plain-1"},
            )

    worker = threading.Thread(target=ask)
    worker.start()
    eventually(lambda: _in_flight(obs_admin, "cancel-plain-1"))
    assert obs_admin.delete("/debug/requests/cancel-plain-1").status_code == 202
    worker.join(10)
    resp = result["resp"]
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "request_cancelled"


def test_an_openai_client_sees_the_cancel_as_an_error(
    observed: ServerProcess, obs_admin: httpx.Client
) -> None:
    oai = openai.OpenAI(
        base_url=observed.url + "/v1", api_key=KEYS[4], max_retries=0, default_headers=SLOW
    )
    stream = oai.chat.completions.create(
        model=QWEN,
        messages=USER,
        max_tokens=300,
        stream=True,
        extra_headers={"X-Request-ID": "cancel-sdk-1"},
    )
    pieces = []
    with pytest.raises(openai.APIError, match="cancelled by an operator"):
        for chunk in stream:
            pieces.append(chunk)
            if len(pieces) == 2:
                assert obs_admin.delete("/debug/requests/cancel-sdk-1").status_code == 202
    oai.close()
    assert 2 <= len(pieces) < 100


def test_unknown_and_finished_requests_cannot_be_cancelled(
    observed: ServerProcess, obs_admin: httpx.Client
) -> None:
    missing = obs_admin.delete("/debug/requests/no-such-request")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "request_not_found"
    with client(observed, KEYS[4]) as user:
        user.post(
            "/v1/chat/completions",
            json={"model": QWEN, "messages": USER, "max_tokens": 1},
            headers={"X-Request-ID": "finished-1"},
        )
    assert obs_admin.delete("/debug/requests/finished-1").status_code == 404
    listed = obs_admin.get("/debug/requests?limit=500").json()
    finished = next(e for e in listed["completed"] if e["requestId"] == "finished-1")
    assert finished["status"] == 200 and finished["tokensOut"] == 1 and finished["latencyMs"] > 0
    assert obs_admin.get("/debug/requests?limit=1").json()["completed"][0]["requestId"]
