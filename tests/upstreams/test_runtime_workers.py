"""Upstreams added, drained, resumed and removed on a gateway with two workers: a change made
through one worker applies on every worker at once (each sees the state database move), the
scheduler's core in the primary follows (waiters for a removed or draining upstream are
refused, saying why), tokens are never shown, and adding and removing again and again leaks
neither connections nor memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest

from tests.servers import ADMIN_KEY, ServerProcess, start_emulator, start_gateway
from tests.upstreams.conftest import ONLY_A, ONLY_B, PLAIN, catalog, listed, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
CLOSE = {**ADMIN, "Connection": "close"}  # every call on a new connection: any worker takes it
TOKEN = "runtime-worker-token-0123456789"
ENV = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "0.5"}


def _chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


Answer = tuple[int, tuple[int, dict[str, Any]]]  # (worker pid, (status, body))


def _ask(gw: ServerProcess, model: str) -> Answer:
    """A chat on a new connection, and the pid of the worker that served it (asked on that
    same connection)."""
    with httpx.Client(headers=ADMIN, timeout=30) as client:
        answer = client.post(gw.url + "/v1/chat/completions", json=_chat(model))
        pid = int(client.get(gw.url + "/debug/status").json()["worker"]["pid"])
    return pid, (answer.status_code, answer.json())


def _on_both(gw: ServerProcess, call: Callable[[], tuple[int, Any]], rounds: int = 12) -> list[Any]:
    """`call` on fresh connections, 8 at a time, until both workers have answered some;
    every answer, as (pid, result)."""
    out: list[Any] = []
    pids: set[int] = set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(rounds):
            for pid, result in pool.map(lambda _: call(), range(8)):
                pids.add(pid)
                out.append((pid, result))
            if len(pids) >= 2:
                return out
    raise AssertionError(f"only worker(s) {pids} answered")


def _chats_to(url: str, model: str) -> int:
    items = httpx.get(url + "/__emulator/requests", timeout=5).json()
    items = items["requests"] if isinstance(items, dict) else items
    return sum(1 for r in items if model in str(r.get("body", "")))


def _listing(gw: ServerProcess) -> tuple[int, dict[str, str]]:
    with httpx.Client(headers=ADMIN, timeout=10) as client:
        answer = client.get(gw.url + "/admin/upstreams")
        assert TOKEN not in answer.text
        pid = int(client.get(gw.url + "/debug/status").json()["worker"]["pid"])
    return pid, {u["name"]: u["state"] for u in answer.json()["upstreams"]}


def _events(gw: ServerProcess, last: str = "upstream_removed") -> tuple[int, str]:
    """The buffered upstream events of the worker that answers, up to the first `last`."""
    kinds = "upstream_added,upstream_draining,upstream_resumed,upstream_removed"
    with httpx.Client(headers={**ADMIN, "Last-Event-ID": "0"}, timeout=10) as client:
        pid = int(client.get(gw.url + "/debug/status").json()["worker"]["pid"])
        seen = ""
        with client.stream("GET", gw.url + "/debug/stream?types=" + kinds) as stream:
            for line in stream.iter_lines():
                seen += line + "\n"
                if f"event: {last}" in seen and line == "":
                    break
    return pid, seen


def _added_at(seen: str) -> float:
    data = next(line for line in seen.splitlines() if '"upstream_added"' in line)
    return float(orjson.loads(data.removeprefix("data:").strip())["timestamp"])


@pytest.fixture
def two(tmp_path: Path) -> Iterator[dict[str, ServerProcess]]:
    a = start_emulator(tmp_path, "--no-sdk", "--models", catalog(tmp_path, "a", ONLY_A), name="a")
    b = start_emulator(
        tmp_path,
        "--no-sdk",
        "--parallel",
        "1",
        "--api-token",
        TOKEN,
        "--models",
        catalog(tmp_path, "b", ONLY_B),
        name="b",
    )
    gw = start_gateway(tmp_path, a.url, "--workers", "2", env=ENV)
    servers = {"a": a, "b": b, "gateway": gw}
    try:
        wait_for(listed(gw, ONLY_A), timeout=60)
        # Both workers up and listing (each reads the upstream's list on its own).
        _on_both(gw, lambda: _ask(gw, ONLY_A))
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def test_a_change_through_one_worker_applies_on_every_worker(
    two: dict[str, ServerProcess],
) -> None:
    gw, b = two["gateway"], two["b"]
    table = {"name": "b", "url": b.url, "token": TOKEN}
    added = httpx.post(gw.url + "/admin/upstreams", json=table, headers=CLOSE, timeout=30)
    assert added.status_code == 201, added.text
    assert TOKEN not in added.text and added.json()["upstream"]["hasToken"] is True

    # No request reaches the other worker for a while: it follows on its own, within about a
    # second (each worker publishes the change on its own stream when it applies it).
    time.sleep(2.0)
    stamps = {
        pid: _added_at(seen) for pid, seen in _on_both(gw, lambda: _events(gw, "upstream_added"))
    }
    lag = max(stamps.values()) - min(stamps.values())
    print(f"the other worker applied the addition {lag:.3f} s later")
    assert len(stamps) == 2 and lag < 1.5, stamps

    # At once, whichever worker takes the connection: it sees the table move on the request's
    # start and waits for the new upstream's first model list.
    answers = _on_both(gw, lambda: _ask(gw, ONLY_B))
    assert all(status == 200 for _, (status, _) in answers), answers
    assert _chats_to(b.url, ONLY_B) == len(answers)  # with its token (it refuses without)
    listings = _on_both(gw, lambda: _listing(gw))
    assert all(states == {"upstream": "up", "b": "up"} for _, states in listings), listings

    drained = httpx.post(gw.url + "/admin/upstreams/b/drain", headers=CLOSE, timeout=30)
    assert drained.status_code == 200, drained.text
    httpx.delete(b.url + "/__emulator/requests", timeout=5)
    refused = _on_both(gw, lambda: _ask(gw, ONLY_B))
    for _, (status, body) in refused:
        assert status == 404 and "b (draining)" in body["error"]["message"], body
    assert _chats_to(b.url, ONLY_B) == 0  # no new request reached it from any worker
    listings = _on_both(gw, lambda: _listing(gw))
    assert all(states["b"] == "draining" for _, states in listings), listings

    resumed = httpx.post(gw.url + "/admin/upstreams/b/resume", headers=CLOSE, timeout=30)
    assert resumed.status_code == 200, resumed.text
    answers = _on_both(gw, lambda: _ask(gw, ONLY_B))
    assert all(status == 200 for _, (status, _) in answers), answers

    removed = httpx.delete(gw.url + "/admin/upstreams/b", headers=CLOSE, timeout=30)
    assert removed.status_code == 200, removed.text
    httpx.delete(b.url + "/__emulator/requests", timeout=5)
    gone = _on_both(gw, lambda: _ask(gw, ONLY_B))
    for _, (status, body) in gone:
        assert status == 404 and body["error"]["code"] == "model_not_found", body
        assert f"no upstream offers model '{ONLY_B}'" in body["error"]["message"], body
    assert _chats_to(b.url, ONLY_B) == 0

    def delete_again() -> tuple[int, tuple[int, dict[str, Any]]]:
        with httpx.Client(headers=ADMIN, timeout=10) as client:
            answer = client.delete(gw.url + "/admin/upstreams/b")
            pid = int(client.get(gw.url + "/debug/status").json()["worker"]["pid"])
        return pid, (answer.status_code, answer.json())

    for _, (status, body) in _on_both(gw, delete_again):
        assert status == 404 and body["error"]["code"] == "upstream_not_found", body
        assert "'b'" in body["error"]["message"]
    listings = _on_both(gw, lambda: _listing(gw))
    assert all(states == {"upstream": "up"} for _, states in listings), listings
    # Every worker told its own stream, naming the upstream and never its token.
    for _, seen in _on_both(gw, lambda: _events(gw), rounds=30):
        for kind in ("upstream_added", "upstream_draining", "upstream_resumed"):
            assert f"event: {kind}" in seen, seen
        assert '"upstream":"b"' in seen.replace(" ", "") and TOKEN not in seen
    assert TOKEN not in gw.logs()

    def requests_seen() -> tuple[int, str]:
        with httpx.Client(headers=ADMIN, timeout=10) as client:
            answer = client.get(gw.url + "/debug/requests?limit=1000")
        return int(answer.json()["worker"]["pid"]), answer.text

    assert all(TOKEN not in text for _, text in _on_both(gw, requests_seen, rounds=30))
    # Stored as given, in files only the owner may read.
    data = Path(gw.env["LMGATE_DATA_DIR"])
    stored = sorted(data.glob("lmgate.sqlite3*"))
    assert stored and all(f.stat().st_mode & 0o077 == 0 for f in stored), stored


def _stream(gw: ServerProcess, model: str, delay: str, out: list[tuple[int, str]]) -> None:
    """A streamed chat on a new connection; (status, body) appended to `out`."""
    headers = {**CLOSE, "x-emulator-token-delay": delay}
    body = {**_chat(model), "stream": True, "max_tokens": 8}
    with httpx.stream(
        "POST", gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as answer:
        out.append((answer.status_code, answer.read().decode()))


def _waiting(gw: ServerProcess) -> int:
    return len(httpx.get(gw.url + "/debug/queue", headers=ADMIN, timeout=10).json()["waiting"])


@pytest.mark.parametrize("change", ["drain", "remove"])
def test_waiters_for_a_drained_or_removed_upstream_are_refused_saying_why(
    two: dict[str, ServerProcess], change: str
) -> None:
    gw, b = two["gateway"], two["b"]
    table = {"name": "b", "url": b.url, "token": TOKEN, "slots": 1}
    added = httpx.post(gw.url + "/admin/upstreams", json=table, headers=CLOSE, timeout=30)
    assert added.status_code == 201, added.text
    running: list[tuple[int, str]] = []
    holder = threading.Thread(target=_stream, args=(gw, ONLY_B, "0.6", running))
    holder.start()  # b's one slot: about 5 s
    wait_for(lambda: _waiting(gw) == 0 and _chats_to(b.url, ONLY_B) == 1, timeout=30)
    waiters: list[tuple[int, str]] = []
    threads = [threading.Thread(target=_stream, args=(gw, ONLY_B, "0", waiters)) for _ in range(6)]
    for thread in threads:
        thread.start()
    wait_for(lambda: _waiting(gw) == 6, timeout=30)  # queued in the one core, from both workers
    started = time.monotonic()
    if change == "drain":
        answer = httpx.post(gw.url + "/admin/upstreams/b/drain", headers=CLOSE, timeout=30)
        why = "upstream 'b' is draining"
    else:
        answer = httpx.delete(gw.url + "/admin/upstreams/b", headers=CLOSE, timeout=30)
        why = "upstream 'b' was removed"
    assert answer.status_code == 200, answer.text
    for thread in threads:
        thread.join(30)
    took = time.monotonic() - started
    assert len(waiters) == 6 and took < 10, (took, waiters)
    print(f"{change}: 6 waiters refused within {took:.2f} s")
    for status, text in waiters:
        assert status == 503 and '"no_upstream"' in text and why in text, (status, text)
    holder.join(60)
    assert running and running[0][0] == 200 and "[DONE]" in running[0][1], running
    assert _chats_to(b.url, ONLY_B) == 1  # no waiter reached it


def _gateway_fds(gw: ServerProcess) -> tuple[int, int]:
    """Open file descriptors and resident bytes over the gateway's processes."""
    assert gw.proc is not None
    procs = [psutil.Process(gw.proc.pid), *psutil.Process(gw.proc.pid).children(True)]
    fds = rss = 0
    for proc in procs:
        try:
            fds += proc.num_fds()
            rss += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return fds, rss


def _connections_to(gw: ServerProcess, ports: set[int]) -> int:
    """The gateway's TCP connections to these upstream ports."""
    assert gw.proc is not None
    found = 0
    for proc in [psutil.Process(gw.proc.pid), *psutil.Process(gw.proc.pid).children(True)]:
        try:
            conns = proc.net_connections("tcp")
        except psutil.NoSuchProcess:
            continue
        found += sum(1 for c in conns if c.raddr and c.raddr.port in ports)
    return found


def test_adding_and_removing_again_and_again_leaks_no_clients(tmp_path: Path) -> None:
    a = start_emulator(tmp_path, "--no-sdk", "--models", catalog(tmp_path, "a", ONLY_A), name="a")
    c = start_emulator(tmp_path, "--no-sdk", "--models", catalog(tmp_path, "c", PLAIN), name="c")
    d = start_emulator(tmp_path, "--no-sdk", "--models", catalog(tmp_path, "d", ONLY_B), name="d")
    gw = start_gateway(tmp_path, a.url, "--workers", "2", env=ENV)
    try:
        wait_for(listed(gw, ONLY_A), timeout=60)
        stop = threading.Event()
        served: list[int] = []

        def traffic() -> None:  # requests keep coming on every worker meanwhile
            while not stop.is_set():
                with httpx.Client(headers=CLOSE, timeout=30) as client:
                    served.append(
                        client.post(gw.url + "/v1/chat/completions", json=_chat(ONLY_A)).status_code
                    )

        def cycle(name: str, url: str, model: str, times: int) -> list[int]:
            statuses = []
            for _ in range(times):
                table = {"name": name, "url": url, "token": TOKEN}
                statuses.append(
                    httpx.post(
                        gw.url + "/admin/upstreams", json=table, headers=CLOSE, timeout=30
                    ).status_code
                )
                with httpx.Client(headers=CLOSE, timeout=30) as client:
                    statuses.append(
                        client.post(gw.url + "/v1/chat/completions", json=_chat(model)).status_code
                    )
                statuses.append(
                    httpx.delete(
                        gw.url + f"/admin/upstreams/{name}", headers=CLOSE, timeout=30
                    ).status_code
                )
            return statuses

        assert set(cycle("c", c.url, PLAIN, 2)) == {200, 201}  # warm: lazily built parts exist
        time.sleep(2)
        fds_before, rss_before = _gateway_fds(gw)
        runner = threading.Thread(target=traffic)
        runner.start()
        try:
            with ThreadPoolExecutor(2) as pool:
                results = list(
                    pool.map(
                        lambda args: cycle(*args),
                        [("c", c.url, PLAIN, 25), ("d", d.url, ONLY_B, 25)],
                    )
                )
        finally:
            stop.set()
            runner.join(60)
        # Each worker closes a removed upstream's pooled connections as soon as its answers
        # through them are over, not when an idle connection would time out (4 s).
        ended = time.monotonic()
        wait_for(lambda: _connections_to(gw, {c.port, d.port}) == 0, timeout=10)
        closed_s = time.monotonic() - ended
        assert closed_s < 2.5, closed_s
        for statuses in results:
            assert set(statuses) == {200, 201}, statuses
        assert served and set(served) == {200}, set(served)
        listings = _on_both(gw, lambda: _listing(gw))
        assert all(states == {"upstream": "up"} for _, states in listings), listings
        # A removed upstream's client closes once its answers are over (checked every 0.5 s).
        deadline = time.monotonic() + 20
        while True:
            fds_after, rss_after = _gateway_fds(gw)
            if fds_after - fds_before <= 30 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert fds_after - fds_before <= 30, (fds_before, fds_after)
        assert rss_after - rss_before < 80 * 1024 * 1024, (rss_before, rss_after)
        assert "Unclosed" not in gw.logs()  # every removed client was closed, none left to gc
        print(f"fds {fds_before} -> {fds_after}, rss {rss_before >> 20} -> {rss_after >> 20} MiB")
        print(f"removed upstreams' connections closed within {closed_s:.2f} s")
    finally:
        gw.stop()
        for server in (a, c, d):
            server.stop()
