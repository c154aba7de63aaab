"""One scheduler queue for every worker: `lmgate serve --workers 3` in front of the emulator.

Every request goes on its own connection, so the kernel hands it to any of the workers; the
answers of `/debug/requests` name the worker that served them, which is how the tests check
that requests were spread. The emulator gives each model one slot and paces tokens, so
requests wait; `GET /__emulator/generations` tells the most answers it generated at once.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.servers import ADMIN_KEY, ServerProcess, start_emulator, start_gateway

QWEN = "qwen/qwen3-4b"
GEMMA = "google/gemma-3-1b"
KEY_A, KEY_B = "sk-shared-a-0123456789", "sk-shared-b-0123456789"
WORKERS = 3
ENV = {
    "LMGATE_ADMIN_KEY": ADMIN_KEY,
    "LMGATE_API_KEYS": f"{KEY_A},{KEY_B}",
    "LMGATE_SYNC_INTERVAL": "0.3",
    "LMGATE_DEBUG_COMPLETED_REQUESTS": "1000",
}


@pytest.fixture(scope="module")
def pair(tmp_root: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    emu = start_emulator(
        tmp_root, "--parallel", "1", "--token-delay", "0.1", "--load-delay", "0.1", name="emu-sq"
    )
    env = {**ENV, "LMGATE_ON_DEMAND_LOAD": "true", "LMGATE_MODEL_TTL": "2"}
    gw = start_gateway(tmp_root, emu.url, "--workers", str(WORKERS), env=env)
    try:
        _ready(gw)
        yield emu, gw
    finally:
        gw.stop()
        emu.stop()


def _until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _ready(gw: ServerProcess) -> None:
    """Every worker has seen the upstream's model list (before that, a worker lets a request
    for a model it does not know yet go on unscheduled) and the core has too."""
    synced: set[int] = set()

    def all_synced() -> bool:
        with ThreadPoolExecutor(6) as pool:
            for resp in pool.map(lambda _: _get(gw.url + "/debug/metrics"), range(6)):
                body = resp.json()
                if body["upstream"]["syncedAt"] is not None:
                    synced.add(body["worker"]["pid"])
        return len(synced) == WORKERS

    _until(all_synced, timeout=30)
    _until(lambda: any(m["model"] == QWEN for m in _queue(gw)["models"]))


def _get(url: str, key: str = ADMIN_KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Connection": "close"}
    return httpx.get(url, headers=headers, timeout=10)


def _queue(gw: ServerProcess) -> dict[str, Any]:
    answer: dict[str, Any] = _get(gw.url + "/debug/queue").json()
    return answer


def _generations(emu: ServerProcess) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(emu.url + "/__emulator/generations").json()
    return stats


class Answer:
    def __init__(self, status: int, headers: httpx.Headers, body: str, elapsed: float) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.elapsed = elapsed

    @property
    def position(self) -> int | None:
        value = self.headers.get("x-queue-position")
        return None if value is None else int(value)

    @property
    def complete(self) -> bool:
        return self.status == 200 and self.body.rstrip().endswith("data: [DONE]")


def _chat(
    gw: ServerProcess,
    rid: str,
    *,
    key: str = KEY_A,
    model: str = QWEN,
    tokens: int = 6,
    delay: float | None = None,
) -> Answer:
    """A streamed chat answer on a new connection, read to its end."""
    headers = {"Authorization": f"Bearer {key}", "Connection": "close", "X-Request-ID": rid}
    if delay is not None:
        headers["x-emulator-token-delay"] = str(delay)
    body = {
        "model": model,
        "stream": True,
        "max_tokens": tokens,
        "messages": [{"role": "user", "content": "hi"}],
    }
    started = time.monotonic()
    with httpx.stream(
        "POST", gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=90
    ) as resp:
        text = resp.read().decode()
    return Answer(resp.status_code, resp.headers, text, time.monotonic() - started)


def _served_by(gw: ServerProcess, prefix: str) -> dict[int, set[str]]:
    """Request ids starting with `prefix`, per worker pid that served them."""
    seen: dict[int, set[str]] = {}
    for _ in range(20):
        with ThreadPoolExecutor(10) as pool:
            answers = list(
                pool.map(lambda _: _get(gw.url + "/debug/requests?limit=1000"), range(10))
            )
        for resp in answers:
            body = resp.json()
            ids = {r["requestId"] for r in body["completed"] if r["requestId"].startswith(prefix)}
            seen[body["worker"]["pid"]] = ids
        if len(seen) == WORKERS:
            break
    return {pid: ids for pid, ids in seen.items() if ids}


def _burst(gw: ServerProcess, prefix: str, n: int, **kw: Any) -> list[Answer]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: _chat(gw, f"{prefix}{i}", **kw), range(n)))


def test_one_slot_holds_over_all_workers_and_positions_are_global(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    emu, gw = pair
    for attempt in range(3):  # until the kernel spread a burst over several workers
        prefix = f"slot-{attempt}-"
        answers = _burst(gw, prefix, 9, tokens=8)
        assert all(a.complete for a in answers), [(a.status, a.body[-200:]) for a in answers]
        if len(_served_by(gw, prefix)) >= 2:
            break
    else:
        pytest.fail("every burst went to a single worker")
    assert _generations(emu)["peak_generating"][QWEN] == 1
    positions = [a.position for a in answers if a.position is not None]
    # One queue: places are counted over every worker's requests (per-worker queues of three
    # workers would hold about three each).
    assert len(positions) >= 6, positions
    assert max(positions) >= 6 and len(set(positions)) >= 6, positions
    assert _queue(gw)["waiting"] == []


def test_debug_queue_shows_every_workers_waiting_requests(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    emu, gw = pair
    with ThreadPoolExecutor(8) as pool:
        blocker = pool.submit(_chat, gw, "dq-block", tokens=10, delay=0.4)
        _until(lambda: _generations(emu)["generating"].get(QWEN) == 1)
        waiting = [pool.submit(_chat, gw, f"dq-wait-{i}", tokens=2) for i in range(6)]
        _until(lambda: _queue(gw)["waitingTotal"] == 6)
        answered: dict[int, dict[str, Any]] = {}
        for _ in range(10):
            with ThreadPoolExecutor(6) as ask:
                for resp in ask.map(lambda _: _get(gw.url + "/debug/queue"), range(6)):
                    body = resp.json()
                    answered[body["worker"]["pid"]] = body
            if len(answered) >= 2:
                break
        assert not blocker.done()
        results = [f.result() for f in [blocker, *waiting]]
    assert len(answered) >= 2  # answers from several workers...
    hosts = {body["hostWorker"]["pid"] for body in answered.values()}
    assert len(hosts) == 1  # ...all from the one core
    for body in answered.values():
        assert body["perWorker"] is False
        assert len(body["waiting"]) == 6
        assert {w["key"] for w in body["waiting"]} == {"api-key-1"}
        assert sorted(w["position"] for w in body["waiting"]) == [1, 2, 3, 4, 5, 6]
    assert all(r.complete for r in results)
    assert len(_served_by(gw, "dq-wait-")) >= 1
    assert _generations(emu)["peak_generating"][QWEN] == 1


def test_a_flooding_key_does_not_push_another_key_back_across_workers(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    emu, gw = pair
    with ThreadPoolExecutor(16) as pool:
        flood = [pool.submit(_chat, gw, f"flood-{i}", tokens=4) for i in range(14)]
        _until(lambda: _queue(gw)["waitingTotal"] >= 10)
        single = _chat(gw, "single-b", key=KEY_B, tokens=4)
        pending = sum(not f.done() for f in flood)
        flooded = [f.result() for f in flood]
    assert single.complete and all(a.complete for a in flooded)
    assert single.position is not None and single.position <= 2
    assert pending >= 6, pending  # B was served while most of the flood still waited
    assert len(_served_by(gw, "flood-")) >= 2
    assert _generations(emu)["peak_generating"][QWEN] == 1


def _loaded(emu: ServerProcess) -> set[str]:
    models = httpx.get(emu.url + "/api/v1/models").json()["models"]
    return {m["key"] for m in models if m["loaded_instances"]}


def test_idle_ttl_unloads_with_several_workers(
    pair: tuple[ServerProcess, ServerProcess],
) -> None:
    emu, gw = pair
    assert GEMMA not in _loaded(emu)
    answers = _burst(gw, "ttl-", 4, model=GEMMA, tokens=2)
    assert all(a.complete for a in answers)
    assert GEMMA in _loaded(emu)
    owned = _until(lambda: [m for m in _queue(gw)["models"] if m["model"] == GEMMA])
    assert owned[0]["owned"] is True  # loaded by lmgate's one core, whichever worker asked
    started = time.monotonic()
    _until(lambda: GEMMA not in _loaded(emu), timeout=20)
    assert time.monotonic() - started < 15
    assert QWEN in _loaded(emu)  # someone else's: left alone


def test_killing_the_primary_while_requests_wait_answers_everyone_and_recovers(
    tmp_root: Path,
) -> None:
    emu = start_emulator(tmp_root, "--parallel", "1", "--token-delay", "0.1", name="emu-kill")
    gw = start_gateway(tmp_root, emu.url, "--workers", str(WORKERS), env=ENV)
    try:
        _ready(gw)
        host = _queue(gw)["hostWorker"]["pid"]
        outcomes: list[Future[Answer]] = []
        with ThreadPoolExecutor(10) as pool:
            outcomes.append(pool.submit(_chat, gw, "kill-block", tokens=12, delay=0.3))
            _until(lambda: _generations(emu)["generating"].get(QWEN) == 1)
            outcomes += [pool.submit(_chat, gw, f"kill-wait-{i}", tokens=2) for i in range(8)]
            _until(lambda: _queue(gw)["waitingTotal"] >= 6)
            killed_at = time.monotonic()
            os.kill(host, signal.SIGKILL)
            results: list[Answer | Exception] = []
            for future in outcomes:
                try:
                    results.append(future.result(timeout=60))
                except httpx.TransportError as exc:  # on the killed worker's own connections
                    results.append(exc)
            elapsed = time.monotonic() - killed_at
        print("after the kill:", [getattr(r, "status", repr(r)) for r in results], elapsed)
        assert elapsed < 40, elapsed  # nobody hung
        answered = [r for r in results if isinstance(r, Answer)]
        assert answered, results
        for answer in answered:
            if answer.status == 200:
                assert answer.complete
            else:
                assert answer.status == 503, (answer.status, answer.body)
                error = httpx.Response(503, content=answer.body).json()["error"]
                assert error["code"] in ("scheduler_unavailable", "queue_timeout"), error
                assert error["message"] and answer.headers["retry-after"]
        # Recovery: a new primary hosts the queue and every worker reaches it again.
        _until(lambda: _queue(gw).get("hostWorker", {"pid": host})["pid"] != host, timeout=30)
        httpx.post(emu.url + "/__emulator/reset")

        def recovered() -> bool:
            answers = _burst(gw, f"after-{time.monotonic_ns()}-", 6, tokens=2)
            return all(a.complete for a in answers)

        _until(recovered, timeout=30)
        answers = _burst(gw, "after-", 6, tokens=3)
        assert all(a.complete for a in answers)
        assert _generations(emu)["peak_generating"][QWEN] == 1
        assert len({_queue(gw)["hostWorker"]["pid"] for _ in range(5)}) == 1
    finally:
        gw.stop()
        emu.stop()


def test_the_socket_is_private_to_the_owner(pair: tuple[ServerProcess, ServerProcess]) -> None:
    _, gw = pair
    assert gw.proc is not None
    dirs = {
        child.environ().get("PROMETHEUS_MULTIPROC_DIR")
        for child in psutil.Process(gw.proc.pid).children()
    } - {None}
    assert len(dirs) == 1  # the workers' (uvicorn's spawn helper has none)
    run = Path(str(dirs.pop())).parent
    sock = run / "scheduler.sock"
    assert sock.is_socket()
    assert sock.stat().st_mode & 0o777 == 0o600
    assert run.stat().st_mode & 0o077 == 0
    assert [p.name for p in run.iterdir() if p.name.startswith(".scheduler")] == []
