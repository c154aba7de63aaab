"""A client that goes away mid-generation frees the server.

Each request asks for more tokens than its client waits for, with end-of-sequence ignored,
so a server left to finish generates exactly that many. Had lmgate kept the upstream request
open after its client left, the server would do so; the verdict is how many tokens the server
generated in all (its own `/metrics`) once its slots are idle again, which no clock decides:
waits only have generous limits.
"""

from __future__ import annotations

import time

import openai
import pytest

from tests.real_model.conftest import Activate
from tests.real_model.engine import ALIAS
from tests.real_model.llama_view import busy_slots, hung_up_on, tokens_predicted, wait_idle
from tests.real_model.shared import EXACT_LENGTH, MESSAGES
from tests.servers import ServerProcess

ASKED = 500  # several seconds of generation on 2 CPU cores
IDLE_WITHIN_S = 300.0  # generous: a busy shared machine generates a few tokens/s
HANG_UP_WITHIN_S = 15.0


def _generated_since(llama: ServerProcess, before: float) -> float:
    assert wait_idle(llama.url, IDLE_WITHIN_S), "the server is still generating"
    return tokens_predicted(llama.url) - before


def _answers(llama: ServerProcess) -> bool:
    with openai.OpenAI(base_url=llama.url + "/v1", api_key="unused", max_retries=0) as client:
        done = client.chat.completions.create(model=ALIAS, messages=MESSAGES, max_tokens=2)
    return done.choices[0].finish_reason is not None


def test_abandoned_stream_stops_generation(
    activate: Activate, gate_openai: openai.OpenAI, llama: ServerProcess
) -> None:
    activate()
    before = tokens_predicted(llama.url)
    stream = gate_openai.chat.completions.create(
        model=ALIAS, messages=MESSAGES, max_tokens=ASKED, stream=True, extra_body=EXACT_LENGTH
    )
    for seen, _ in enumerate(stream, start=1):
        if seen == 8:
            break
    assert busy_slots(llama.url) == 1  # it is mid-generation as the client leaves
    stream.close()
    generated = _generated_since(llama, before)
    assert generated < ASKED, f"the server generated all {ASKED} tokens"
    assert _answers(llama)


def _held_hang_up(port: int, known: set[str]) -> bool:
    """A connection the server's peer closed and that stays unclosed by the server: the
    server is busy with it. (An idle keep-alive connection closes on both ends at once.)"""
    fresh = hung_up_on(port) - known
    if not fresh:
        return False
    time.sleep(0.5)
    return bool(fresh & hung_up_on(port))


def test_abandoned_plain_request_is_hung_up_upstream(
    activate: Activate, gate_openai: openai.OpenAI, llama: ServerProcess
) -> None:
    """A non-streaming client that times out: lmgate must drop its upstream request too.

    This llama.cpp build notices a dropped non-streamed request only some of the time, so
    either outcome of lmgate hanging up counts: the server stops early, or its end of the
    connection is left half-closed while it finishes. lmgate holding the request open shows
    as neither, and as all the tokens generated.
    """
    activate()
    before = tokens_predicted(llama.url)
    known = hung_up_on(llama.port)
    with pytest.raises(openai.APITimeoutError):
        gate_openai.with_options(timeout=1.0).chat.completions.create(
            model=ALIAS, messages=MESSAGES, max_tokens=ASKED, extra_body=EXACT_LENGTH
        )
    deadline = time.monotonic() + HANG_UP_WITHIN_S
    while busy_slots(llama.url) and time.monotonic() < deadline:
        if _held_hang_up(llama.port, known):
            return  # lmgate hung up; the server finishes on its own before the next test
        time.sleep(0.05)
    generated = _generated_since(llama, before)
    assert generated < ASKED, "lmgate kept the request open to its end"
    assert _answers(llama)
