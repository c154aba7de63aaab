"""LM Studio log tailing: parsing entries, following the newest file across rotation and
truncation, and `lmstudio_log` events on a real gateway's debug stream."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lmgate.observe.events import EventBus
from lmgate.observe.lmstudio_log_parse import EntryAssembler, fields
from lmgate.observe.lmstudio_logs import FileFollower, LmStudioLogTailer, newest_log
from tests.observe.helpers import EventReader
from tests.servers import ADMIN_KEY, ServerProcess, admin_headers, start_gateway

SAMPLING = [
    "[2026-11-24 10:00:01][DEBUG] Sampling params:\trepeat_last_n = 64, repeat_penalty = 1.100",
    "\ttop_k = 40, top_p = 0.950, min_p = 0.050, temp = 0.800",
    "\tmirostat = 0, mirostat_lr = 0.100",
]
BODY = [
    "[2026-11-24 10:00:00][DEBUG] Received request: POST to /v1/chat/completions with body {",
    '  "messages": [{"role": "user", "content": "my secret plan"}]',
    "}",
]


def entries(lines: list[str]) -> list[dict[str, object]]:
    assembler = EntryAssembler()
    found = [assembler.feed(line) for line in lines] + [assembler.flush()]
    return [fields(entry) for entry in found if entry is not None]


def test_entries_tags_and_extracted_fields() -> None:
    lines = [
        *BODY,
        "[2026-11-24 10:00:00][INFO][LM STUDIO SERVER] Running chat completion on conversation.",
        *SAMPLING,
        "[2026-11-24 10:00:02][DEBUG][Client=lms-cli] Client created.",
        "[2026-11-24 10:00:03][INFO][qwen/qwen3-4b] Prompt processing progress: 42.5%",
        "[2026-11-24 10:00:04][DEBUG] Looking for non-prefix sequences to reuse from cache",
        "Cache reuse summary: 939/1000 of prompt (93.9%), 900 prefix, 39 non-prefix",
        "[2026-11-24 10:00:05][WARN] Model is slow",
        "[2024-05-17 14:45:46.998] [ERROR] [LM STUDIO SERVER] Server stopped",
    ]
    body, info, sampling, client, progress, cache, warn, old = entries(lines)
    assert body["level"] == "DEBUG" and "secret" not in str(body["message"])
    assert re.search(r"with body \[\d+ characters not shown\]$", str(body["message"]))
    assert info["source"] == "LM STUDIO SERVER" and info["logTime"] == "2026-11-24 10:00:00"
    assert sampling["params"] == {
        "repeat_last_n": 64,
        "repeat_penalty": 1.1,
        "top_k": 40,
        "top_p": 0.95,
        "min_p": 0.05,
        "temp": 0.8,
        "mirostat": 0,
        "mirostat_lr": 0.1,
    }
    assert client["client"] == "lms-cli" and client["message"] == "Client created."
    assert progress["model"] == "qwen/qwen3-4b" and progress["progress"] == 42.5
    assert cache["cacheReuse"] == {
        "reused": 939,
        "total": 1000,
        "percent": 93.9,
        "prefix": 900,
        "nonPrefix": 39,
    }
    assert warn["level"] == "WARN"
    assert old["level"] == "ERROR" and old["message"] == "Server stopped"


# What LM Studio writes around prompts and answers (shapes from real server logs), with
# SECRET wherever a prompt or an answer would be.
CONTENT = [
    "[2024-03-16 13:38:38.940] [INFO] Accumulated 2 tokens: SECRET answer",
    "[2024-03-16 13:38:39.184] [INFO] [LM STUDIO SERVER] Generated prediction: {",
    '  "choices": [{"message": {"role": "assistant", "content": "SECRET"}}],',
    '  "usage": {"prompt_tokens": 2}',
    "}",
    "[2026-11-24 10:00:06][DEBUG][qwen/qwen3-4b] Generated prediction:  {",
    '  "id": "chatcmpl-1", "choices": [{"message": {"content": "SECRET again"}}]',
    "}",
    "[2024-03-16 13:38:14.615] [INFO] [LM STUDIO SERVER] Last message: { role: 'user', "
    "content: 'SECRET' } (total messages = 19)",
    "[2024-03-16 13:38:39.232] [INFO] Received POST request to /v1/chat/completions with body: {",
    '  "messages": [{"role": "user", "content": "SECRET"}]',
    "}",
    "[2026-11-24 10:00:07][ERROR] Received request for /api/v1/chat with invalid JSON: "
    "Unexpected token 'S', \"SECRET\" is not valid JSON",
    '[2024-02-02 20:12:37.871] [ERROR] [Server Error] {"title":"SECRET in a title"}',
    "[2026-11-24 10:00:08][INFO][qwen/qwen3-4b] Model generated tool calls:  [SECRET()]",
    "[2026-11-24 10:00:09][INFO] Returning {",
    '  "data": [{"id": "SECRET-model"}]',
    "}",
    "[2026-11-24 10:00:10][INFO][LM STUDIO SERVER] Streaming response...",
    "SECRET first streamed words",
    "and SECRET more of them",
    "[2026-11-24 10:00:11][DEBUG] Sampling params:\tpassword = SECRET, top_k = 40",
    "[2026-11-24 10:00:12][INFO][qwen/qwen3-4b] Partial output: SECRET",
    "[2026-11-24 10:00:13][INFO] SECRET words in a shape nobody has seen",
    "[2026-11-24 10:00:14][WARN] Unexpected token 'S', \"SECRET\" is not valid JSON",
    "[2026-11-24 10:00:15][INFO][SECRET plan] looks like a tag",
    "[2026-11-24 10:00:16][DEBUG] Formatted prompt: <|im_start|>user SECRET<|im_end|>",
]


def test_no_prompt_or_answer_text_in_any_line_kind() -> None:
    found = entries(CONTENT)
    assert len(found) == 16
    for entry in found:
        assert "SECRET" not in json.dumps(entry), entry
        assert entry["level"] and entry["logTime"]
    shown = [str(e["message"]) for e in found]
    assert re.fullmatch(r"Accumulated 2 tokens: \[\d+ characters not shown\]", shown[0])
    assert re.fullmatch(r"Generated prediction: \[\d+ characters not shown\]", shown[1])
    assert shown[2].startswith("Generated prediction:") and found[2]["model"] == "qwen/qwen3-4b"
    assert shown[9].startswith("Streaming response...\n[") and "not shown" in shown[9]
    assert "params" not in found[10]  # read from known-safe lines only
    assert all("not shown" in text for text in shown[:9] + shown[10:])


SAFE = [
    "[2026-11-24 10:00:00][INFO][LM STUDIO SERVER] Running chat completion on conversation "
    "with 2 messages.",
    "[2026-11-24 10:00:00][INFO][LM STUDIO SERVER] First token generated. Continuing to stream "
    "response..",
    "[2026-11-24 10:00:00][INFO] Finished streaming response",
    "[2026-11-24 10:00:00][INFO][LM STUDIO SERVER] Client disconnected. Stopping generation... "
    "(If the model is busy processing the prompt, it will finish first.)",
    "[2026-11-24 10:00:00][DEBUG] Received request: GET to /v1/models",
    "[2026-11-24 10:00:00][INFO] [LM STUDIO SERVER] Accumulating tokens ... (stream = false)",
    "[2026-11-24 10:00:00][DEBUG] Total prompt tokens: 20 / Prompt tokens to decode: 20",
    "[2026-11-24 10:00:00][DEBUG] FinishedProcessingPrompt. Progress: 100",
    "[2026-11-24 10:00:00][INFO][LM STUDIO SERVER] Success! HTTP server listening on port 1234",
    "[2026-11-24 10:00:00][ERROR] Error: received prediction-error",
    "[2026-11-24 10:00:00][WARN] Unexpected endpoint or method. (GET /v1/foo). Returning 200 "
    "anyway",
    "[2026-11-24 10:00:00][INFO] Loading model qwen/qwen3-4b@q4_k_m",
]


def test_known_safe_lines_are_shown_as_they_are() -> None:
    for line, entry in zip(SAFE, entries(SAFE), strict=True):
        message = str(entry["message"])
        assert "not shown" not in message and line.endswith(message), (line, message)
    combined = entries(
        [
            *SAMPLING,
            "[2026-11-24 10:00:02][DEBUG] Looking for non-prefix sequences to reuse from cache",
            "Cache reuse summary: 9/10 of prompt (90%)",
        ]
    )
    assert combined[0]["params"]["top_k"] == 40 and "not shown" not in str(combined[0]["message"])
    assert combined[1]["cacheReuse"] == {"reused": 9, "total": 10, "percent": 90.0}


def test_bodies_are_redacted_not_hidden_when_prompt_logging_is_on() -> None:
    assembler = EntryAssembler()
    for line in BODY:
        assembler.feed(line)
    entry = assembler.flush()
    assert entry is not None
    shown = fields(entry, clean_body=lambda text: text.replace("secret", "[redacted]"))
    assert "my [redacted] plan" in str(shown["message"])


def write(path: Path, *lines: str, mode: str = "a", end: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode, encoding="utf-8") as fh:
        fh.writelines(line + end for line in lines)


def test_newest_file_is_the_latest_day_then_session(tmp_path: Path) -> None:
    for name in (
        "2026-10/2026-10-31.3.log",
        "2026-11/2026-11-02.1.log",
        "2026-11/2026-11-02.2.log",
    ):
        write(tmp_path / name, "x")
    assert newest_log(tmp_path) == tmp_path / "2026-11/2026-11-02.2.log"
    assert newest_log(tmp_path / "missing") is None


def test_follower_survives_new_files_rotation_and_truncation(tmp_path: Path) -> None:
    day1 = tmp_path / "2026-11" / "2026-11-30.1.log"
    write(day1, "old history")
    follower = FileFollower(tmp_path)
    assert follower.read() == []  # starts at the end: history is not replayed
    write(day1, "one")
    write(day1, "tw", end="")
    assert follower.read() == ["one"]  # a partial line waits for its end
    write(day1, "o")
    day2 = tmp_path / "2026-12" / "2026-12-01.1.log"
    write(day2, "three")
    assert follower.read() == ["two", "three"]  # the old file finished, then the new one
    write(day2, "four", mode="w")  # truncated and rewritten
    assert follower.read() == ["four"]
    os.rename(day2, tmp_path / "moved.log")
    write(day2, "five")  # same name, another file
    assert follower.read() == ["five"]
    follower.close()


async def test_tailer_publishes_entries_and_finishes_idle_ones(tmp_path: Path) -> None:
    log = tmp_path / "2026-11" / "2026-11-30.1.log"
    write(log, "")
    bus = EventBus()
    tailer = LmStudioLogTailer(tmp_path, bus)
    await tailer.step()
    write(log, *SAMPLING)
    await tailer.step()
    assert bus.recent(10) == []  # the entry may still continue
    await tailer.step()  # a poll with nothing new finishes it
    (event,) = bus.recent(10)
    assert event.type == "lmstudio_log" and event.data["params"]["top_k"] == 40
    assert event.data["file"] == "2026-11-30.1.log"
    tailer.follower.close()


@pytest.fixture
def logs_gateway(tmp_root: Path, emulator: ServerProcess) -> Iterator[tuple[ServerProcess, Path]]:
    folder = tmp_root / "lmstudio-logs"
    write(folder / "2026-11" / "2026-11-30.1.log", "[2026-11-30 23:59:00][INFO] before start")
    gw = start_gateway(
        tmp_root,
        emulator.url,
        env={
            "LMGATE_ADMIN_KEY": ADMIN_KEY,
            "LMGATE_LMSTUDIO_LOG_DIR": str(folder),
            "LMGATE_LMSTUDIO_LOG_POLL_SECONDS": "0.05",
        },
    )
    yield gw, folder
    gw.stop()


def test_log_lines_reach_the_debug_stream_across_a_new_month(
    logs_gateway: tuple[ServerProcess, Path],
) -> None:
    gw, folder = logs_gateway
    reader = EventReader(gw.url, "?types=lmstudio_log")
    try:
        reader.next("connected")
        write(folder / "2026-11" / "2026-11-30.1.log", "[2026-11-30 23:59:58][WARN] low memory")
        first = reader.next("lmstudio_log")
        assert first["level"] == "WARN" and first["message"] == "low memory"
        assert first["requestId"] is None and isinstance(first["id"], int)
        new_month = folder / "2026-12" / "2026-12-01.1.log"
        write(new_month, "[2026-12-01 00:00:01][INFO][Client=lms-cli] Client created.")
        second = reader.next("lmstudio_log")
        assert second["client"] == "lms-cli" and second["file"] == "2026-12-01.1.log"
    finally:
        reader.close()


def test_content_never_reaches_the_debug_stream(
    logs_gateway: tuple[ServerProcess, Path],
) -> None:
    gw, folder = logs_gateway
    reader = EventReader(gw.url, "?types=lmstudio_log")
    try:
        reader.next("connected")
        write(folder / "2026-12" / "2026-12-01.1.log", *CONTENT, "[2026-12-01 00:00:09][WARN] done")
        seen = [reader.until("lmstudio_log", lambda e: True) for _ in range(17)]
        assert seen[-1]["message"] == "done"
        assert all("SECRET" not in json.dumps(event) for event in seen)
        metrics = httpx.get(gw.url + "/debug/metrics", headers=admin_headers()).text
        assert "SECRET" not in metrics
    finally:
        reader.close()
