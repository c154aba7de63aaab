"""Defaults stored with `/admin/models/activate` change what a real model does.

Requests leave out `model` and the field under test; lmgate must fill them in with each
endpoint's wire name, and the server's own answer (its usage, its finish reason, its
`/slots` record) shows whether it did.
"""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import httpx
import openai
import pytest

from tests.real_model.conftest import Activate
from tests.real_model.engine import ALIAS
from tests.real_model.llama_view import last_task_params
from tests.real_model.shared import (
    ANTHROPIC_ABSENT,
    EXACT_LENGTH,
    FROM_SCRATCH,
    MESSAGES,
    OPENAI_ABSENT,
    PROMPT,
    stop_word,
)
from tests.servers import ServerProcess

# Each endpoint asked without a length: the tokens it produced and why it stopped.
Ask = Callable[[openai.OpenAI, anthropic.Anthropic], tuple[int, str | None]]


def _chat(oai: openai.OpenAI, _: anthropic.Anthropic) -> tuple[int, str | None]:
    done = oai.chat.completions.create(
        model=OPENAI_ABSENT, messages=MESSAGES, extra_body=EXACT_LENGTH
    )
    assert done.usage is not None
    return done.usage.completion_tokens, done.choices[0].finish_reason


def _completions(oai: openai.OpenAI, _: anthropic.Anthropic) -> tuple[int, str | None]:
    done = oai.completions.create(model=OPENAI_ABSENT, prompt=PROMPT, extra_body=EXACT_LENGTH)
    assert done.usage is not None
    return done.usage.completion_tokens, done.choices[0].finish_reason


def _responses(oai: openai.OpenAI, _: anthropic.Anthropic) -> tuple[int, str | None]:
    done = oai.responses.create(model=OPENAI_ABSENT, input=PROMPT, extra_body=EXACT_LENGTH)
    assert done.usage is not None
    return done.usage.output_tokens, done.status


def _messages(_: openai.OpenAI, claude: anthropic.Anthropic) -> tuple[int, str | None]:
    done = claude.messages.create(
        model=ANTHROPIC_ABSENT,
        max_tokens=ANTHROPIC_ABSENT,
        messages=MESSAGES,
        extra_body=EXACT_LENGTH,
    )
    return done.usage.output_tokens, done.stop_reason


@pytest.mark.parametrize(
    ("ask", "cut_short"),
    [
        (_chat, {"length"}),
        (_completions, {"length"}),
        # OpenAI says "incomplete"; this llama.cpp build says "completed" either way
        (_responses, {"incomplete", "completed"}),
        (_messages, {"max_tokens"}),
    ],
    ids=["chat", "completions", "responses", "messages"],
)
def test_max_tokens_default_ends_generation_at_that_count(
    activate: Activate,
    gate_openai: openai.OpenAI,
    gate_anthropic: anthropic.Anthropic,
    ask: Ask,
    cut_short: set[str],
) -> None:
    activate(maxTokens=5)
    tokens, reason = ask(gate_openai, gate_anthropic)
    assert tokens == 5
    assert reason in cut_short


def test_request_max_tokens_wins_over_the_default(
    activate: Activate, gate_openai: openai.OpenAI
) -> None:
    activate(maxTokens=5)
    done = gate_openai.chat.completions.create(
        model=OPENAI_ABSENT, messages=MESSAGES, max_tokens=3, extra_body=EXACT_LENGTH
    )
    assert done.usage is not None and done.usage.completion_tokens == 3


def test_stop_strings_default_cuts_the_output(
    activate: Activate, gate_openai: openai.OpenAI, direct_openai: openai.OpenAI
) -> None:
    """The same greedy answer, once whole from the server and once cut by lmgate's default."""
    whole = direct_openai.chat.completions.create(
        model=ALIAS,
        messages=MESSAGES,
        temperature=0,
        max_tokens=32,
        extra_body={**EXACT_LENGTH, **FROM_SCRATCH},
    )
    text = whole.choices[0].message.content or ""
    stop = stop_word(text)
    activate(temperature=0, maxTokens=32, stopStrings=[stop])
    cut = gate_openai.chat.completions.create(
        model=OPENAI_ABSENT, messages=MESSAGES, extra_body={**EXACT_LENGTH, **FROM_SCRATCH}
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]


def _answers_by_seed(
    oai: openai.OpenAI, temperature: float | openai.Omit = openai.omit
) -> set[str]:
    """Answers to one prompt under three sampling seeds: one answer means no randomness."""
    answers = set()
    for seed in (1, 2, 3):
        done = oai.chat.completions.create(
            model=OPENAI_ABSENT,
            messages=MESSAGES,
            seed=seed,
            temperature=temperature,
            extra_body={**EXACT_LENGTH, **FROM_SCRATCH},
        )
        answers.add(done.choices[0].message.content or "")
    return answers


def test_temperature_zero_default_reaches_the_server_and_repeats_answers(
    activate: Activate, gate_openai: openai.OpenAI, llama: ServerProcess
) -> None:
    activate(temperature=0, maxTokens=16)
    assert len(_answers_by_seed(gate_openai)) == 1
    assert last_task_params(llama.url)["temperature"] == 0


def test_request_temperature_overrides_the_default(
    activate: Activate, gate_openai: openai.OpenAI, llama: ServerProcess
) -> None:
    """With the request's temperature the seeds matter again, and the server saw its value."""
    activate(temperature=0, maxTokens=16)
    assert len(_answers_by_seed(gate_openai, 1.5)) > 1
    assert last_task_params(llama.url)["temperature"] == pytest.approx(1.5)


def test_without_defaults_the_server_uses_its_own(
    activate: Activate, gate_openai: openai.OpenAI, llama: ServerProcess
) -> None:
    """A model activated with no defaults injects none: the server's own temperature holds."""
    activate()
    gate_openai.chat.completions.create(model=OPENAI_ABSENT, messages=MESSAGES, max_tokens=2)
    default = httpx.get(llama.url + "/props", timeout=10).json()["default_generation_settings"]
    assert last_task_params(llama.url)["temperature"] == default["params"]["temperature"]


def test_requests_without_model_are_answered_as_the_active_model(
    activate: Activate, gate_openai: openai.OpenAI, gate_admin: httpx.Client
) -> None:
    """llama.cpp would answer without a model too, so lmgate's own record shows the injection."""
    activate()
    stream = gate_openai.chat.completions.create(
        model=OPENAI_ABSENT,
        messages=MESSAGES,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=EXACT_LENGTH,
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert [u.completion_tokens for u in usage] == [4]
    recent = gate_admin.get("/debug/status").json()["recentRequests"]
    chats = [r for r in recent if r["path"] == "/v1/chat/completions"]
    assert chats[-1]["model"] == ALIAS
    assert chats[-1]["status"] == 200
