"""The scheduler's queue in front of real generation: a gateway with one slot per model
(`LMGATE_MODEL_SLOTS=1`) and two keys, in front of the tier's llama.cpp server (which has two
slots of its own, so only lmgate can be what keeps answers one at a time).

A stream holds the slot (its client reads a first token, then waits); the requests sent
meanwhile wait in lmgate's queue. Once the queue is built the holder hangs up, which frees the
slot however fast or slow the machine generates, and the waiting requests reach the server one
by one: in arrival order for one key, and in fair order across keys (a key with several waiting
requests does not keep another key's one behind all of its own). Each answer that waited says
so in `X-Queue-Position` (its place when queued) and `X-Queue-Wait-Ms`. The order is read from
when each answer ended, which with one slot is the order served; the server's own `/slots`
shows that no two of them ever ran at once.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.observe.helpers import eventually
from tests.real_model.conftest import CLIENT_TIMEOUT_S, IDLE_BEFORE_TEST_S
from tests.real_model.engine import ALIAS
from tests.real_model.llama_view import slots, wait_idle
from tests.real_model.shared import EXACT_LENGTH, MESSAGES
from tests.servers import ADMIN_KEY, ServerProcess, admin_headers, start_gateway

KEY_A, KEY_B = "sk-real-queue-a-0123456789", "sk-real-queue-b-0123456789"
HOLD_TOKENS = 1500  # more than the holder waits for: it hangs up once the queue is built
TOKENS = 8  # each queued answer
QUEUED_WITHIN_S = 60.0


@pytest.fixture(scope="module")
def one_slot_gateway(tmp_root: Path, llama: ServerProcess) -> Iterator[ServerProcess]:
    gate = start_gateway(
        tmp_root,
        llama.url,
        env={
            "LMGATE_ADMIN_KEY": ADMIN_KEY,
            "LMGATE_API_KEYS": f"{KEY_A},{KEY_B}",
            "LMGATE_MODEL_SLOTS": "1",
            "LMGATE_SYNC_INTERVAL": "0.5",
        },
    )
    try:
        eventually(lambda: _knows_model(gate), 60.0)
        yield gate
    finally:
        gate.stop()


def _knows_model(gate: ServerProcess) -> bool:
    listed = httpx.get(gate.url + "/admin/models", headers=admin_headers(), timeout=10).json()
    return any(m.get("key") == ALIAS for m in listed.get("models", []))


def _waiting(gate: ServerProcess) -> list[dict[str, Any]]:
    queue = httpx.get(gate.url + "/debug/queue", headers=admin_headers(), timeout=10).json()
    waiting: list[dict[str, Any]] = queue["waiting"]
    return waiting


class Peak:
    """The most answers the server generated at once while it watched, the holder's left out
    (after it hangs up, the server may take a moment to notice and stop it)."""

    def __init__(self, llama: ServerProcess) -> None:
        self.llama = llama
        self.peak = 0
        self.ignored: int | None = None  # the holder's task id on the server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def running(self) -> list[int]:
        return [s["id_task"] for s in slots(self.llama.url) if s["is_processing"]]

    def _watch(self) -> None:
        while not self._stop.is_set():
            others = [task for task in self.running() if task != self.ignored]
            self.peak = max(self.peak, len(others))
            time.sleep(0.02)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


class Asker:
    """Sends named requests in threads; records each answer's headers, text and end time."""

    def __init__(self, gate: ServerProcess) -> None:
        self.clients = {
            key: openai.OpenAI(
                base_url=gate.url + "/v1", api_key=key, max_retries=0, timeout=CLIENT_TIMEOUT_S
            )
            for key in (KEY_A, KEY_B)
        }
        self.answers: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, str] = {}
        self.holding, self.release = threading.Event(), threading.Event()
        self.threads: list[threading.Thread] = []

    def hold(self) -> None:
        """A stream that takes the slot and keeps it until `release` is set, then hangs up."""
        self._start(self._hold)

    def _hold(self) -> None:
        stream = self.clients[KEY_A].chat.completions.create(
            model=ALIAS,
            messages=MESSAGES,
            max_tokens=HOLD_TOKENS,
            stream=True,
            extra_body={**EXACT_LENGTH, "user": "hold"},
        )
        with stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    self.holding.set()
                    self.release.wait(CLIENT_TIMEOUT_S)
                    break

    def send(self, name: str, key: str, tokens: int) -> None:
        self._start(lambda: self._answer(name, key, tokens))

    def _start(self, work: Any) -> None:
        def run() -> None:
            try:
                work()
            except Exception as exc:  # reported by the test
                self.failed[threading.current_thread().name] = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=run, name=f"ask-{len(self.threads)}")
        self.threads.append(thread)
        thread.start()

    def _answer(self, name: str, key: str, tokens: int) -> None:
        sent = time.monotonic()
        raw = self.clients[key].chat.completions.with_raw_response.create(
            model=ALIAS,
            messages=MESSAGES,
            max_tokens=tokens,
            extra_body={**EXACT_LENGTH, "user": name},
        )
        done = raw.parse()
        text, finish = done.choices[0].message.content or "", done.choices[0].finish_reason
        tokens_out = done.usage.completion_tokens if done.usage else None
        self.answers[name] = {
            "sent": sent,
            "ended": time.monotonic(),
            "position": raw.headers.get("x-queue-position"),
            "wait_ms": raw.headers.get("x-queue-wait-ms"),
            "text": text,
            "finish": finish,
            "tokens": tokens_out,
        }

    def join(self) -> None:
        for thread in self.threads:
            thread.join(CLIENT_TIMEOUT_S * 2)
        for client in self.clients.values():
            client.close()

    def served_order(self) -> list[str]:
        return sorted(self.answers, key=lambda name: self.answers[name]["ended"])


def _queue_behind_a_holder(
    gate: ServerProcess,
    llama: ServerProcess,
    asker: Asker,
    peak: Peak,
    queued: list[tuple[str, str]],
) -> None:
    """The slot taken by a stream that waits, then `queued` (name, key) sent one by one, each
    only once the one before is in the queue (so their arrival order is certain); then the
    holder hangs up and the queue drains."""
    assert wait_idle(llama.url, IDLE_BEFORE_TEST_S), "the server stayed busy"
    asker.hold()
    assert asker.holding.wait(QUEUED_WITHIN_S), "the holding stream never started"
    [peak.ignored] = eventually(peak.running, QUEUED_WITHIN_S)
    for count, (name, key) in enumerate(queued, start=1):
        asker.send(name, key, TOKENS)
        eventually(lambda count=count: len(_waiting(gate)) >= count, QUEUED_WITHIN_S)
    asker.release.set()


def _check_answers(asker: Asker, names: list[str]) -> None:
    assert asker.failed == {}
    assert set(asker.answers) == set(names)
    for name in names:
        answer = asker.answers[name]
        assert answer["finish"] == "length" and answer["text"].strip(), (name, answer)
        assert answer["tokens"] == TOKENS  # real generation, every token asked for


def test_one_slot_serves_one_key_in_arrival_order_with_queue_headers(
    one_slot_gateway: ServerProcess, llama: ServerProcess
) -> None:
    names = ["first", "second", "third"]
    asker = Asker(one_slot_gateway)
    with Peak(llama) as peak:
        try:
            _queue_behind_a_holder(
                one_slot_gateway, llama, asker, peak, [(name, KEY_A) for name in names]
            )
            released = time.monotonic()
        finally:
            asker.release.set()
            asker.join()
    _check_answers(asker, names)
    assert asker.served_order() == names
    assert [int(asker.answers[n]["position"]) for n in names] == [1, 2, 3]
    # Each waited from its arrival at least until the holder hung up, and never longer than
    # it took in all (0.5 s slack for the clocks).
    for name in names:
        answer = asker.answers[name]
        waited = int(answer["wait_ms"]) / 1000
        assert released - answer["sent"] - 0.5 <= waited <= answer["ended"] - answer["sent"]
    admitted = [asker.answers[n]["sent"] + int(asker.answers[n]["wait_ms"]) / 1000 for n in names]
    assert all(b >= a - 0.05 for a, b in itertools.pairwise(admitted)), admitted
    assert peak.peak == 1  # the server has two slots; lmgate let one answer run at a time
    assert _waiting(one_slot_gateway) == []


def test_one_slot_serves_a_second_key_before_the_first_keys_backlog(
    one_slot_gateway: ServerProcess, llama: ServerProcess
) -> None:
    flood = ["a1", "a2", "a3", "a4"]
    asker = Asker(one_slot_gateway)
    with Peak(llama) as peak:
        try:
            _queue_behind_a_holder(
                one_slot_gateway, llama, asker, peak, [*((n, KEY_A) for n in flood), ("b1", KEY_B)]
            )
        finally:
            asker.release.set()
            asker.join()
    _check_answers(asker, [*flood, "b1"])
    order = asker.served_order()
    print(f"served: {order}")
    # Key A's own requests keep their arrival order; key B's one request, sent last, is served
    # right after A's first instead of after all four.
    assert [n for n in order if n.startswith("a")] == flood
    assert order.index("b1") == 1, order
    assert int(asker.answers["b1"]["position"]) == 2  # behind a1 only, when it was queued
    assert int(asker.answers["b1"]["wait_ms"]) > 0
    assert peak.peak == 1
    assert _waiting(one_slot_gateway) == []
