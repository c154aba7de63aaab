"""LM Studio telemetry: `lms log stream --json` (a stand-in script that records its argv and
prints what `lms` prints), the log-file fallback, and stats read off `/api/v1/chat` answers."""

from __future__ import annotations

import asyncio
import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lmgate.observe.lms_events import events_of
from lmgate.observe.lms_telemetry import host_args, lines
from tests.observe.helpers import EventReader, eventually
from tests.servers import ADMIN_KEY, ServerProcess, admin_headers, start_gateway

SECRET = "zebra-secret-words"
WATCH = "?types=lmstudio_*&lastEventId=0"
MODEL_LINES = [
    {"timestamp": 1767225600000, "data": {"type": "llm.prediction.input", "modelPath": "x",
     "modelIdentifier": "qwen/qwen3-4b", "input": f"user: {SECRET}"}},
    {"timestamp": 1767225601000, "data": {"type": "llm.prediction.output",
     "modelIdentifier": "qwen/qwen3-4b", "output": f"{SECRET} mail me at a@b.example",
     "stats": {"stopReason": "eosFound", "tokensPerSecond": 42.5, "timeToFirstTokenSec": 0.12,
               "promptTokensCount": 20, "predictedTokensCount": 30, "totalTokensCount": 50,
               "numGpuLayers": -1}}},
]  # fmt: skip
SERVER_LINES = [
    "[2026-01-01 10:00:00][INFO][LM STUDIO SERVER] Running chat completion on conversation "
    "with 2 messages.",
    "[2026-01-01 10:00:00][INFO] Received request: POST to /v1/chat/completions with body "
    f'{{"messages":[{{"role":"user","content":"{SECRET}"}}]}}',
    "[2026-01-01 10:00:01][DEBUG][qwen/qwen3-4b] Prompt processing progress: 45.5%",
    "[2026-01-01 10:00:02][INFO] Loading model google/gemma-3-1b",
    "[2026-01-01 10:00:03][INFO] Loading progress: 50%",
    f"[2026-01-01 10:00:04][INFO] {SECRET} is what the model said",
]
SCRIPT = """#!{python}
import json, os, sys, time
argv = sys.argv[1:]
with open({record!r}, "a") as out:
    out.write(json.dumps(argv) + "\\n")
if {fail!r}:
    sys.stderr.write("Failed to connect to LM Studio\\n")
    sys.exit(1)
source = argv[argv.index("--source") + 1]
for line in {scenario!r}[source]:
    print(json.dumps(line), flush=True)
if source == "server" and {exit_server!r}:
    sys.exit(0)
parent = os.getppid()
while os.getppid() == parent:
    time.sleep(0.2)
"""


def _lms(tmp: Path, name: str, *, fail: bool = False, exit_server: bool = False) -> Path:
    scenario = {
        "model": MODEL_LINES,
        "server": [{"timestamp": 1767225600000, "data": {"type": "server.log", "content": c}}
                   for c in SERVER_LINES],
    }  # fmt: skip
    path = tmp / f"lms-{name}"
    path.write_text(
        SCRIPT.format(
            python=sys.executable,
            record=str(tmp / f"argv-{name}.jsonl"),
            fail=fail,
            scenario=scenario,
            exit_server=exit_server,
        )
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _argv(tmp: Path, name: str) -> list[list[str]]:
    record = tmp / f"argv-{name}.jsonl"
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


@pytest.fixture(scope="module")
def lms_gw(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    script = _lms(tmp_root, "plain", exit_server=True)
    env = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_LMS_PATH": str(script)}
    server = start_gateway(tmp_root, emulator.url, env=env)
    yield server
    server.stop()


def _all(reader: EventReader, until: str, match: Any = lambda e: True) -> list[Any]:
    found = []
    while True:
        event, data = reader.items.get(timeout=15)
        found.append((event, data))
        if event == until and match(data):
            return found


def test_lms_stream_becomes_typed_events(
    lms_gw: ServerProcess, emulator: ServerProcess, tmp_root: Path
) -> None:
    reader = EventReader(lms_gw.url, WATCH)
    seen = _all(reader, "lmstudio_model_load_progress", lambda e: e["phase"] == "progress")
    seen += reader.drain(1.0)
    reader.close()
    kinds = [kind for kind, _ in seen]
    stats = next(data for kind, data in seen if kind == "lmstudio_prediction_stats")
    assert stats["origin"] == "lms" and stats["model"] == "qwen/qwen3-4b"
    assert stats["tokensPerSecond"] == 42.5 and stats["timeToFirstTokenSeconds"] == 0.12
    assert (stats["promptTokens"], stats["predictedTokens"], stats["totalTokens"]) == (20, 30, 50)
    assert stats["stopReason"] == "eosFound" and stats["logTime"] == 1767225601.0
    assert "output" not in stats
    assert "lmstudio_prediction_input" not in kinds  # prompts are not published
    progress = next(data for kind, data in seen if kind == "lmstudio_prompt_progress")
    assert progress["progress"] == pytest.approx(0.455) and progress["model"] == "qwen/qwen3-4b"
    loads = [data for kind, data in seen if kind == "lmstudio_model_load_progress"]
    assert {"model": "google/gemma-3-1b", "phase": "start"}.items() <= loads[0].items()
    assert loads[1]["phase"] == "progress" and loads[1]["progress"] == 0.5
    logs = [data for kind, data in seen if kind == "lmstudio_log"]
    assert any("Running chat completion" in d["message"] for d in logs)
    assert all(d["origin"] == "lms" for d in logs)
    assert SECRET not in json.dumps(seen)  # neither prompt nor answer text, in any event
    port = emulator.url.rsplit(":", 1)[1]
    where = ["--host", "127.0.0.1", "--port", port]
    argv = _argv(tmp_root, "plain")
    base = ["log", "stream", "--json", "--source"]
    assert [*base, "model", "--filter", "output", *where] in argv
    assert [*base, "server", *where] in argv
    # the server stream ended after its lines: it is started again
    eventually(lambda: sum(a[4] == "server" for a in _argv(tmp_root, "plain")) >= 2)
    status = httpx.get(lms_gw.url + "/debug/metrics", headers=admin_headers()).json()
    telemetry = status["lmsTelemetry"]
    assert telemetry["model"]["lines"] >= 2 and telemetry["model"]["running"] is True
    assert telemetry["logFilesInstead"] is False


def test_prompt_logging_shows_redacted_text(tmp_root: Path, emulator: ServerProcess) -> None:
    script = _lms(tmp_root, "prompts")
    env = {
        "LMGATE_ADMIN_KEY": ADMIN_KEY,
        "LMGATE_LMS_PATH": str(script),
        "LMGATE_LOG_PROMPTS": "true",
    }
    server = start_gateway(tmp_root, emulator.url, env=env)
    try:
        reader = EventReader(server.url, WATCH)
        seen = _all(reader, "lmstudio_prediction_stats")
        seen += reader.drain(1.0)
        reader.close()
    finally:
        server.stop()
    stats = next(data for kind, data in seen if kind == "lmstudio_prediction_stats")
    assert SECRET in stats["output"] and "a@b.example" not in stats["output"]
    prompt = next(data for kind, data in seen if kind == "lmstudio_prediction_input")
    assert SECRET in prompt["input"]
    assert any(a[4:7] == ["model", "--filter", "input,output"] for a in _argv(tmp_root, "prompts"))


def test_failing_lms_falls_back_to_the_log_files(tmp_root: Path, emulator: ServerProcess) -> None:
    script = _lms(tmp_root, "broken", fail=True)
    logs = tmp_root / "server-logs"
    (logs / "2026-01").mkdir(parents=True)
    log_file = logs / "2026-01" / "2026-01-01.1.log"
    log_file.write_text("[2026-01-01 09:00:00][INFO] Server started.\n")
    env = {
        "LMGATE_ADMIN_KEY": ADMIN_KEY,
        "LMGATE_LMS_PATH": str(script),
        "LMGATE_LMSTUDIO_LOG_DIR": str(logs),
        "LMGATE_LMSTUDIO_LOG_POLL_SECONDS": "0.1",
    }
    server = start_gateway(tmp_root, emulator.url, env=env)
    try:
        reader = EventReader(server.url, WATCH)
        fell = reader.until("lmstudio_telemetry", lambda e: e["source"] == "server")
        assert fell["state"] == "fallback"
        with log_file.open("a") as out:
            out.write("[2026-01-01 09:00:05][INFO] Client disconnected. Stopping generation...\n")
        entry = reader.until("lmstudio_log", lambda e: "Client disconnected" in e["message"])
        assert entry["file"] == "2026-01-01.1.log"
        reader.close()
        starts = sum(a[4] == "server" for a in _argv(tmp_root, "broken"))
        assert starts == 3  # given up after three quick failures, not retried forever
        status = httpx.get(server.url + "/debug/metrics", headers=admin_headers()).json()
        assert status["lmsTelemetry"]["logFilesInstead"] is True
        assert status["lmsTelemetry"]["server"]["gaveUp"] is True
    finally:
        server.stop()


def test_no_lms_means_the_log_files(gateway: ServerProcess) -> None:
    status = httpx.get(gateway.url + "/debug/metrics", headers=admin_headers()).json()
    assert status["lmsTelemetry"] is None  # none on PATH here


def test_answer_stats_from_native_chat(gateway: ServerProcess) -> None:
    reader = EventReader(gateway.url, "?types=lmstudio_prediction_stats")
    eventually(lambda: reader.status == 200)
    headers = admin_headers()
    body = {"model": "qwen/qwen3-4b", "input": "hello"}
    plain = httpx.post(gateway.url + "/api/v1/chat", json=body, headers=headers, timeout=30)
    assert plain.status_code == 200
    event = reader.until("lmstudio_prediction_stats", lambda e: e["origin"] == "answer")
    assert event["requestId"] == plain.headers["x-request-id"]
    answer_stats = plain.json()["stats"]
    assert event["tokensPerSecond"] == answer_stats["tokens_per_second"]
    assert event["timeToFirstTokenSeconds"] == answer_stats["time_to_first_token_seconds"]
    assert event["predictedTokens"] == answer_stats["total_output_tokens"]
    assert event["endpoint"] == "native_chat" and event["model"] == "qwen/qwen3-4b"
    streamed = httpx.post(
        gateway.url + "/api/v1/chat", json={**body, "stream": True}, headers=headers, timeout=30
    )
    assert streamed.status_code == 200
    event = reader.until(
        "lmstudio_prediction_stats", lambda e: e["requestId"] == streamed.headers["x-request-id"]
    )
    assert event["predictedTokens"] > 0 and event["tokensPerSecond"] > 0
    reader.close()


def test_events_of_unknown_and_hostile_lines() -> None:
    assert events_of("not an object", None) == []
    assert events_of({"data": {"type": "llm.prediction.input", "input": SECRET}}, None) == []
    weird = {"timestamp": "soon", "data": {"type": "llm.prediction.output", "output": SECRET,
             "modelIdentifier": "m" * 10_000, "stats": {"tokensPerSecond": "fast",
             "timeToFirstTokenSec": float("nan"), "stopReason": ["x"]}}}  # fmt: skip
    [(kind, data)] = events_of(weird, None)
    assert kind == "lmstudio_prediction_stats" and len(data["model"]) == 200
    assert "tokensPerSecond" not in data and "timeToFirstTokenSeconds" not in data
    assert SECRET not in json.dumps(data) and data["logTime"] is None
    assert host_args("http://[::1]:1234") == ["--host", "127.0.0.1", "--port", "1234"]
    assert host_args("http://[fd00::5]:1234") == []
    assert host_args("https://gpu-box.lan") == ["--host", "gpu-box.lan", "--port", "443"]


def test_overlong_lines_are_dropped_not_held() -> None:
    async def run() -> list[bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(b'{"a":1}\n' + b"x" * (6 << 20) + b'\n{"b":2}\n')
        reader.feed_eof()
        return [line async for line in lines(reader, limit=1 << 20)]

    assert asyncio.run(run()) == [b'{"a":1}', b'{"b":2}']
