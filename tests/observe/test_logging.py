"""Logs: JSON lines to stdout and a rotating file; prompts never logged unless asked, and then
redacted and truncated."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lmgate.observe.prompt_log import clean, prompt_text, redact
from tests.observe.conftest import KEYS, SETTINGS, client
from tests.observe.helpers import eventually
from tests.servers import ADMIN_KEY, ServerProcess, start_gateway

QWEN = "qwen/qwen3-4b"
SECRET_TALK = (
    f"my key is sk-abcdefghijklmnop1234, the admin key {ADMIN_KEY}, mail bob@example.com; "
    + "and then a very long story " * 20
)


def test_redaction_and_truncation() -> None:
    text = redact(SECRET_TALK, [ADMIN_KEY])
    assert "sk-abc" not in text and ADMIN_KEY not in text and "bob@" not in text
    assert text.count("[redacted]") == 3
    assert redact("Authorization: Bearer abc.def-123") == "Authorization: [redacted]"
    assert redact("data:image/png;base64," + "A" * 100) == "data:image/png;base64,[redacted]"
    assert clean("ab " * 20, 10) == "ab ab ab a... [50 more characters]"
    assert clean("short", 10) == "short"


def test_prompt_text_of_each_shape() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url"}]},
        ]
    }
    assert prompt_text("chat", chat) == "system: be nice\nuser: hi [image_url]"
    assert prompt_text("completions", {"prompt": "once"}) == "once"
    assert (
        prompt_text("messages", {"system": "s", "messages": [{"role": "user", "content": "q"}]})
        == "system: s\nuser: q"
    )
    assert prompt_text("responses", {"instructions": "i", "input": "q"}) == "system: i\nq"


@pytest.fixture(scope="module")
def logging_gateway(
    tmp_root: Path, obs_emulator: ServerProcess
) -> Iterator[tuple[ServerProcess, Path]]:
    log_file = tmp_root / "gateway-logs" / "lmgate.log"
    env = {
        **SETTINGS,
        "LMGATE_LOG_FILE": str(log_file),
        "LMGATE_LOG_FILE_MAX_BYTES": "4096",
        "LMGATE_LOG_FILE_BACKUPS": "2",
        "LMGATE_LOG_PROMPTS": "true",
        "LMGATE_LOG_PROMPT_CHARS": "120",
    }
    gw = start_gateway(tmp_root, obs_emulator.url, env=env)
    yield gw, log_file
    gw.stop()


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_prompts_and_answers_are_logged_redacted_when_asked(
    logging_gateway: tuple[ServerProcess, Path],
) -> None:
    gw, _ = logging_gateway
    body = {"model": QWEN, "messages": [{"role": "user", "content": SECRET_TALK}], "max_tokens": 4}
    with client(gw, KEYS[1]) as user:
        plain = user.post("/v1/chat/completions", json=body)
        streamed = user.post("/v1/chat/completions", json={**body, "stream": True})
    for resp in (plain, streamed):
        rid = resp.headers["x-request-id"]
        eventually(
            lambda: any(
                line.get("request_id") == rid and line["event"] == "request"  # noqa: B023
                for line in _lines(gw.logs())
            )
        )
        mine = [line for line in _lines(gw.logs()) if line.get("request_id") == rid]
        prompt = next(line for line in mine if line["event"] == "prompt")
        answer = next(line for line in mine if line["event"] == "answer")
        assert prompt["prompt"].startswith("user: my key is [redacted]")
        assert "more characters]" in prompt["prompt"] and len(prompt["prompt"]) < 200
        assert "sk-abc" not in json.dumps(mine) and ADMIN_KEY not in json.dumps(mine)
        assert answer["answer"] and prompt["key"] == "api-key-1"
    text = plain.json()["choices"][0]["message"]["content"]
    logged = [
        line["answer"]
        for line in _lines(gw.logs())
        if line.get("request_id") == plain.headers["x-request-id"] and line["event"] == "answer"
    ]
    assert logged == [clean(text, 120)]


def test_the_log_file_rotates(logging_gateway: tuple[ServerProcess, Path]) -> None:
    gw, log_file = logging_gateway
    with client(gw, KEYS[1]) as user:
        for _ in range(30):
            user.get("/v1/models")
    assert log_file.exists() and (log_file.parent / "lmgate.log.1").exists()
    assert not (log_file.parent / "lmgate.log.3").exists()
    for path in log_file.parent.iterdir():
        assert path.stat().st_size <= 4096 + 1024
        assert all(json.loads(line)["event"] for line in path.read_text().splitlines())
    # stdout keeps every line too
    assert any(line.get("path") == "/v1/models" for line in _lines(gw.logs()))


def test_prompts_stay_out_of_the_logs_by_default(observed: ServerProcess) -> None:
    with client(observed, KEYS[1]) as user:
        body = {"model": QWEN, "messages": [{"role": "user", "content": "purple elephant 4417"}]}
        rid = user.post("/v1/chat/completions", json={**body, "max_tokens": 2}).headers[
            "x-request-id"
        ]
    eventually(lambda: rid in observed.logs())
    assert "purple elephant" not in observed.logs()
