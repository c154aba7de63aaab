"""Two real servers behind one gateway (`--upstream a=URL --upstream b=URL`): requests spread
over both within each one's slots, and one of them killed mid-run.

Both servers run the tier's model with the same slots (`ServerConfig`), and the gateway is
told that count (`LMGATE_MODEL_SLOTS`: a server's own slot count is shown, not imposed). What
each server did is read from the server itself: `/slots` shows each running task's
`n_predict`, which the tests make distinct per request, so it tells which server runs which;
`/metrics` counts the tokens it generated and the requests it had to hold back for want of a
free slot (none, when the gateway keeps to the slots).

`a` is the tier's shared server; `b` is started for each test, so the one killed (SIGKILL, no
goodbye) is never one another test needs. Model lists are read once a minute only: the
requests themselves are what find `b` gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from lmgate.upstreams.health import THRESHOLD
from tests.observe.helpers import eventually
from tests.real_model.conftest import CLIENT_TIMEOUT_S, IDLE_BEFORE_TEST_S, start_llama
from tests.real_model.engine import ALIAS, Engine, ServerConfig
from tests.real_model.llama_view import busy_slots, deferred, slots, tokens_predicted, wait_idle
from tests.real_model.shared import EXACT_LENGTH, MESSAGES
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess, admin_headers, start_gateway

SLOTS = ServerConfig().n_parallel
TOKENS = 24  # each short answer: a few seconds on a busy 2-core machine
SPREAD = 3 * SLOTS  # requests sent at once: one server's slots more than both have
HOLD = 1800  # a holding stream's length (plus its index): far longer than the test takes it
WITHIN_S = 60.0  # a state the gateway or a server reaches in well under a second when idle
ENDED_WITHIN_S = 30.0  # a stream on the killed server ends with its error in milliseconds
FINISHED_WITHIN_S = 300.0  # every client, once nothing holds the slots any more


@dataclass
class Pair:
    gate: ServerProcess
    a: ServerProcess
    b: ServerProcess

    def servers(self) -> dict[str, ServerProcess]:
        return {"a": self.a, "b": self.b}


@pytest.fixture
def pair(engine: Engine, tmp_root: Path, llama: ServerProcess) -> Iterator[Pair]:
    assert wait_idle(llama.url, IDLE_BEFORE_TEST_S), "the shared server stayed busy"
    b = start_llama(engine, tmp_root)
    try:
        gate = start_gateway(
            tmp_root,
            f"a={llama.url}",
            "--upstream",
            f"b={b.url}",
            env={
                "LMGATE_ADMIN_KEY": ADMIN_KEY,
                "LMGATE_API_KEYS": API_KEY,
                "LMGATE_MODEL_SLOTS": str(SLOTS),
                "LMGATE_SYNC_INTERVAL": "60",
            },
        )
        try:
            eventually(lambda: _offered_on(gate) == ["a", "b"], WITHIN_S)
            activated = httpx.post(
                gate.url + "/admin/models/activate",
                json={"modelKey": ALIAS},
                headers=admin_headers(),
                timeout=30,
            )
            assert activated.status_code == 200, activated.text
            yield Pair(gate, llama, b)
        finally:
            gate.stop()
    finally:
        b.stop()


def _offered_on(gate: ServerProcess) -> list[str]:
    """The upstreams the gateway's merged model list says offer the tier's model."""
    answer = httpx.get(gate.url + "/v1/models", headers=admin_headers(API_KEY), timeout=10)
    for entry in answer.json().get("data", []):
        if entry.get("id") == ALIAS:
            return sorted(entry.get("lmgate", {}).get("upstreams", []))
    return []


def _client(gate: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gate.url + "/v1", api_key=API_KEY, max_retries=0, timeout=CLIENT_TIMEOUT_S
    )


def _waiting(gate: ServerProcess) -> int:
    queue = httpx.get(gate.url + "/debug/queue", headers=admin_headers(), timeout=10).json()
    return len(queue["waiting"])


def _running(server: ServerProcess) -> set[int]:
    """`n_predict` of each task the server is generating now."""
    return {s["params"]["n_predict"] for s in slots(server.url) if s["is_processing"]}


class Watch:
    """Samples, every few tens of milliseconds, how many slots each server has busy and how
    many requests it holds back, and how many wait in the gateway's queue; keeps the peaks.
    A server that stops answering (killed) is no longer sampled."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair
        self.busy = dict.fromkeys(pair.servers(), 0)
        self.deferred = dict.fromkeys(pair.servers(), 0)
        self.queued = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.03):
            for name, server in self.pair.servers().items():
                try:
                    self.busy[name] = max(self.busy[name], busy_slots(server.url))
                    self.deferred[name] = max(self.deferred[name], deferred(server.url))
                except httpx.HTTPError:
                    continue
            self.queued = max(self.queued, _waiting(self.pair.gate))

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None
    ended: float | None = None


@dataclass
class Clients:
    """Work run in threads, one outcome each: its value or the exception it ended with."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    threads: dict[str, threading.Thread] = field(default_factory=dict)

    def start(self, name: str, work: Callable[[], Any]) -> None:
        outcome = self.outcomes[name] = Outcome()

        def run() -> None:
            try:
                outcome.value = work()
            except BaseException as exc:  # the test judges it
                outcome.error = exc
            outcome.ended = time.monotonic()

        thread = self.threads[name] = threading.Thread(target=run, name=name, daemon=True)
        thread.start()

    def join(self, names: list[str], within: float) -> None:
        """Every one of `names` ends within `within` seconds in all: none may hang."""
        deadline = time.monotonic() + within
        for name in names:
            self.threads[name].join(max(0.0, deadline - time.monotonic()))
        hung = [name for name in names if self.threads[name].is_alive()]
        assert not hung, f"still running after {within:.0f} s: {hung}"

    def errors(self, names: list[str]) -> dict[str, str]:
        return {
            n: f"{type(o.error).__name__}: {o.error}"
            for n in names
            if (o := self.outcomes[n]).error is not None
        }


def _ask(oai: openai.OpenAI, tokens: int, ready: threading.Barrier | None = None) -> dict[str, Any]:
    """A non-streamed answer of exactly `tokens` tokens; its text, length and queue place."""
    if ready is not None:
        ready.wait(WITHIN_S)
    raw = oai.chat.completions.with_raw_response.create(
        model=ALIAS, messages=MESSAGES, max_tokens=tokens, extra_body=EXACT_LENGTH
    )
    done = raw.parse()
    return {
        "text": done.choices[0].message.content or "",
        "finish": done.choices[0].finish_reason,
        "tokens": done.usage.completion_tokens if done.usage else None,
        "position": raw.headers.get("x-queue-position"),
    }


def _check_answers(clients: Clients, names: list[str]) -> None:
    assert clients.errors(names) == {}
    for name in names:
        answer = clients.outcomes[name].value
        assert answer["finish"] == "length" and answer["text"].strip(), (name, answer)
        assert answer["tokens"] == TOKENS, (name, answer)  # real generation, all of it


def test_requests_spread_over_both_servers_within_their_slots(pair: Pair) -> None:
    before = {name: tokens_predicted(s.url) for name, s in pair.servers().items()}
    names = [f"r{i}" for i in range(SPREAD)]
    clients = Clients()
    ready = threading.Barrier(SPREAD)
    with _client(pair.gate) as oai, Watch(pair) as watch:
        for name in names:
            clients.start(name, lambda: _ask(oai, TOKENS, ready))
        clients.join(names, FINISHED_WITHIN_S)
    _check_answers(clients, names)
    generated = {n: tokens_predicted(s.url) - before[n] for n, s in pair.servers().items()}
    print(
        f"tokens generated per server: {generated}; peaks: busy {watch.busy}, "
        f"held back {watch.deferred}, queued in the gateway {watch.queued}"
    )
    assert sum(generated.values()) == SPREAD * TOKENS
    # Both servers ran a full set of slots at once, neither ever had to hold a request back,
    # and what did not fit waited in the gateway: the answers beyond both servers' slots say
    # they were queued.
    assert watch.busy == {"a": SLOTS, "b": SLOTS}
    assert watch.deferred == {"a": 0, "b": 0}
    for name, tokens in generated.items():
        assert tokens >= SLOTS * TOKENS, (name, generated)
    queued = [n for n in names if clients.outcomes[n].value["position"] is not None]
    assert len(queued) == SPREAD - 2 * SLOTS, queued
    assert _waiting(pair.gate) == 0


@dataclass
class Held:
    """A holding stream: when its first token came, and how it ended."""

    first: threading.Event = field(default_factory=threading.Event)
    chunks: list[float] = field(default_factory=list)  # when each later chunk came
    finish: str | None = None


def _hold(oai: openai.OpenAI, tokens: int, held: Held, release: threading.Event) -> str:
    """A stream of `tokens` tokens read as it comes until `release` (then hung up): "released";
    "finished" if it ended first; an error event raises (the SDK's `APIError`)."""
    stream = oai.chat.completions.create(
        model=ALIAS, messages=MESSAGES, max_tokens=tokens, stream=True, extra_body=EXACT_LENGTH
    )
    with stream:
        for chunk in stream:
            if held.first.is_set():
                held.chunks.append(time.monotonic())
            elif chunk.choices and chunk.choices[0].delta.content:
                held.first.set()
            if release.is_set():
                return "released"
    return "finished"


def _events(gate: ServerProcess, kind: str, within: float) -> list[dict[str, Any]]:
    """The published events of `kind` (from the start of the buffer), read until one names
    upstream `b` or `within` seconds pass."""
    found: list[dict[str, Any]] = []
    headers = {**admin_headers(), "Last-Event-ID": "0"}
    deadline = time.monotonic() + within
    url = f"{gate.url}/debug/stream?types={kind}"
    while time.monotonic() < deadline:
        found.clear()
        try:
            with httpx.stream("GET", url, headers=headers, timeout=5) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        found.append(orjson.loads(line[5:]))
                    if any(e.get("upstream") == "b" for e in found):
                        return found
                    if time.monotonic() > deadline:
                        break
        except httpx.ReadTimeout:
            continue
    return found


def _metrics(gate: ServerProcess) -> str:
    return httpx.get(gate.url + "/metrics", headers=admin_headers(), timeout=10).text


def _states(gate: ServerProcess) -> dict[str, str]:
    listed = httpx.get(gate.url + "/admin/upstreams", headers=admin_headers(), timeout=10).json()
    return {u["name"]: u["state"] for u in listed["upstreams"]}


def test_a_server_killed_mid_run(pair: Pair) -> None:
    """Both servers full with streams and more requests queued in the gateway; then `b` is
    killed. Its streams end at once with an error event; the queued requests, each admitted on
    `b` as its slots free and refused there, are admitted once more on `a` and answered; the
    refusals open `b`'s circuit. `a`'s streams go on untouched and the gateway stays ready."""
    holders = {f"h{i}": HOLD + i for i in range(2 * SLOTS)}
    held = {name: Held() for name in holders}
    queued = [f"q{i}" for i in range(2 * SLOTS)]
    release = threading.Event()
    clients = Clients()
    with _client(pair.gate) as oai, Watch(pair) as watch:
        try:
            for name, tokens in holders.items():
                clients.start(name, lambda t=tokens, h=held[name]: _hold(oai, t, h, release))
            for name in holders:
                assert held[name].first.wait(WITHIN_S), f"{name} never started"
            # Which server runs which stream, by the server's own account.
            on = {n: _running(s) for n, s in pair.servers().items()}
            assert sorted(on["a"] | on["b"]) == sorted(holders.values()), on
            assert len(on["a"]) == len(on["b"]) == SLOTS, on
            on_a = [n for n, t in holders.items() if t in on["a"]]
            on_b = [n for n, t in holders.items() if t in on["b"]]
            for name in queued:
                clients.start(name, lambda: _ask(oai, TOKENS))
            eventually(lambda: _waiting(pair.gate) == len(queued), WITHIN_S)
            time.sleep(0.5)  # a few samples more: had lmgate sent any on, a server would hold it
            assert watch.deferred == {"a": 0, "b": 0}  # they wait in lmgate, not on a server
            assert pair.b.proc is not None
            pair.b.proc.kill()
            killed = time.monotonic()
            pair.b.proc.wait(30)

            # b's streams end with the error event the SDK raises on, promptly.
            clients.join(on_b, ENDED_WITHIN_S)
            for name in on_b:
                outcome = clients.outcomes[name]
                assert isinstance(outcome.error, openai.APIError), (name, outcome)
                assert not isinstance(outcome.error, openai.APITimeoutError), (name, outcome)
                assert outcome.ended is not None and outcome.ended - killed < ENDED_WITHIN_S
                print(
                    f"{name} on b ended {outcome.ended - killed:.3f} s after the kill: "
                    f"{outcome.error}"
                )

            # The refusals opened b's circuit: the event says so, and every view of it agrees.
            downs = _events(pair.gate, "upstream_down", WITHIN_S)
            down = [e for e in downs if e.get("upstream") == "b"]
            assert down, downs
            assert str(down[0].get("reason", "")).startswith("circuit open"), down
            metrics = _metrics(pair.gate)
            assert 'lmgate_upstreams_up{upstream="b"} 0.0' in metrics
            assert 'lmgate_upstreams_up{upstream="a"} 1.0' in metrics
            ready = httpx.get(pair.gate.url + "/ready", headers=admin_headers(), timeout=10)
            assert ready.status_code == 200, ready.text
            assert ready.json()["upstreams"] == {"a": True, "b": False}
            # Down while the circuit is open, and for good once the model list is read again.
            eventually(lambda: _states(pair.gate) == {"a": "up", "b": "down"}, 90.0)

            # a's streams went on through all of it.
            for name in on_a:
                assert clients.threads[name].is_alive(), (name, clients.outcomes[name])
                assert any(t > killed for t in held[name].chunks), name
        finally:
            release.set()  # a's streams hang up; the queued requests get a's slots
        clients.join([*holders, *queued], FINISHED_WITHIN_S)
        fresh = _ask(oai, TOKENS)
    # Each queued request admitted on b and refused there was admitted once more on a (counted
    # once it was): enough of them to open b's circuit, and none failed.
    retried = [
        line
        for line in _metrics(pair.gate).splitlines()
        if line.startswith("lmgate_upstream_requests_total{")
        and 'outcome="retried"' in line
        and 'upstream="b"' in line
    ]
    assert retried and float(retried[0].split()[-1]) >= THRESHOLD, retried
    assert clients.errors(on_a) == {}
    assert all(clients.outcomes[n].value in ("released", "finished") for n in on_a)
    _check_answers(clients, queued)  # none was lost with b: all answered by a
    assert fresh["finish"] == "length" and fresh["tokens"] == TOKENS
    assert _states(pair.gate)["b"] == "down"
