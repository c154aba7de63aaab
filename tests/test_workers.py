"""`lmgate serve --workers 2` in front of the emulator: shared state, limits, metrics, usage.

Each request goes on a new connection, so the kernel hands it to either worker; answers of
`/debug/*` name the worker that served them, which is how the tests tell them apart.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import (
    ADMIN_KEY,
    ServerProcess,
    clean_env,
    free_port,
    serve_argv,
    start_gateway,
    upstream_requests,
)

CHAT = {"messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture(scope="module")
def gateway2(tmp_root: Path, emulator: ServerProcess) -> Iterator[ServerProcess]:
    server = start_gateway(
        tmp_root,
        emulator.url,
        "--workers",
        "2",
        # every request of the spread test stays listed, however many bursts it takes
        env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_DEBUG_COMPLETED_REQUESTS": "1000"},
    )
    yield server
    server.stop()


def _fresh(method: str, url: str, key: str = ADMIN_KEY, **kw: Any) -> httpx.Response:
    """One request on its own connection."""
    headers = {"Authorization": f"Bearer {key}", "Connection": "close", **kw.pop("headers", {})}
    return httpx.request(method, url, headers=headers, timeout=30, **kw)


def _parallel(n: int, call: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    with ThreadPoolExecutor(max_workers=min(n, 40)) as pool:
        return list(pool.map(call, range(n)))


def per_worker(server: ServerProcess, path: str, tries: int = 300) -> dict[int, dict[str, Any]]:
    """`path` as answered by each of the two workers (keyed by pid)."""
    seen: dict[int, dict[str, Any]] = {}
    for _ in range(tries // 10):
        for resp in _parallel(10, lambda _: _fresh("GET", server.url + path)):
            body = resp.json()
            seen.setdefault(body["worker"]["pid"], body)
        if len(seen) == 2:
            return seen
    raise AssertionError(f"only {len(seen)} worker(s) answered {path}")


def served_by(server: ServerProcess, prefix: str) -> dict[int, set[str]]:
    """Request ids starting with `prefix` that each worker finished."""
    answers = per_worker(server, "/debug/requests?limit=10000")
    return {
        pid: {r["requestId"] for r in body["completed"] if r["requestId"].startswith(prefix)}
        for pid, body in answers.items()
    }


def test_requests_succeed_and_spread_over_both_workers(gateway2: ServerProcess) -> None:
    # The kernel hands a shared socket's connections to whichever worker accepts first, so
    # an idle moment can give one worker a whole burst: send bursts until both served some.
    sent = 0
    for _ in range(10):
        answers = _parallel(
            60,
            lambda i: _fresh(
                "POST",
                gateway2.url + "/v1/chat/completions",
                json=CHAT,
                headers={"X-Request-ID": f"spread-{sent + i}"},  # noqa: B023
            ),
        )
        sent += 60
        assert [r.status_code for r in answers] == [200] * 60
        served = served_by(gateway2, "spread-")
        if all(served.values()):
            break
    assert all(served.values()), served
    assert sum(len(ids) for ids in served.values()) == sent
    workers = {body["worker"]["index"] for body in per_worker(gateway2, "/debug/metrics").values()}
    assert workers == {0, 1}


def test_activation_through_one_worker_applies_on_the_other(
    gateway2: ServerProcess, upstream: httpx.Client
) -> None:
    url = gateway2.url
    for temperature in (0.11, 0.77):  # twice, so each worker may have been the stale one
        resp = _fresh(
            "POST",
            url + "/admin/models/activate",
            json={
                "modelKey": "google/gemma-3-1b",
                "defaultInference": {"temperature": temperature},
            },
        )
        assert resp.status_code == 200, resp.text
        upstream.delete("/__emulator/requests")
        tag = f"act-{temperature}-"
        answers = _parallel(
            30,
            lambda i, tag=tag: _fresh(
                "POST",
                url + "/v1/chat/completions",
                json=CHAT,
                headers={"X-Request-ID": f"{tag}{i}"},
            ),
        )
        assert all(r.status_code == 200 for r in answers)
        bodies = [
            r["body"] for r in upstream_requests(upstream) if r["path"] == "/v1/chat/completions"
        ]
        assert len(bodies) == 30
        assert all(
            b["model"] == "google/gemma-3-1b" and b["temperature"] == temperature for b in bodies
        )
        assert all(served_by(gateway2, tag).values())
    states = per_worker(gateway2, "/debug/metrics")
    assert {s["modelInfo"]["activeModel"] for s in states.values()} == {"google/gemma-3-1b"}
    _fresh("POST", url + "/admin/models/unload", json={"modelKey": "google/gemma-3-1b"})


def _create_key(server: ServerProcess, name: str, **limits: Any) -> str:
    resp = _fresh(
        "POST", server.url + "/admin/keys", json={"name": name, "scope": "inference", **limits}
    )
    assert resp.status_code == 201, resp.text
    key: str = resp.json()["key"]
    return key


def test_managed_key_works_on_both_workers(gateway2: ServerProcess) -> None:
    key = _create_key(gateway2, "on-both")
    answers = _parallel(
        30,
        lambda i: _fresh(
            "GET", gateway2.url + "/v1/models", key, headers={"X-Request-ID": f"key-{i}"}
        ),
    )
    assert [r.status_code for r in answers] == [200] * 30
    assert all(served_by(gateway2, "key-").values())


def test_rpm_limit_holds_across_workers(gateway2: ServerProcess) -> None:
    key = _create_key(gateway2, "ten-a-minute", rpm=10)
    answers = _parallel(
        40,
        lambda i: _fresh(
            "GET", gateway2.url + "/v1/models", key, headers={"X-Request-ID": f"rpm-{i}"}
        ),
    )
    codes = sorted(r.status_code for r in answers)
    assert codes == [200] * 10 + [429] * 30
    assert all(served_by(gateway2, "rpm-").values())  # both workers took part
    assert all(int(r.headers["retry-after"]) > 0 for r in answers if r.status_code == 429)


def _prometheus_chat_total(server: ServerProcess) -> float:
    text = _fresh("GET", server.url + "/metrics").text
    found = re.search(r'^lmgate_requests_total\{route="chat",status="200"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def _usage_requests(server: ServerProcess) -> int:
    body = _fresh("GET", server.url + "/admin/usage?model=qwen/qwen3-4b").json()
    return int(body["totals"]["requests"])


def test_prometheus_and_usage_add_up_over_workers(gateway2: ServerProcess) -> None:
    chat_before, usage_before = _prometheus_chat_total(gateway2), _usage_requests(gateway2)
    body = {**CHAT, "model": "qwen/qwen3-4b"}
    answers = _parallel(
        50,
        lambda i: _fresh(
            "POST",
            gateway2.url + "/v1/chat/completions",
            json=body,
            headers={"X-Request-ID": f"sum-{i}"},
        ),
    )
    assert all(r.status_code == 200 for r in answers)
    assert all(served_by(gateway2, "sum-").values())
    assert _prometheus_chat_total(gateway2) - chat_before == 50
    deadline = time.monotonic() + 10  # the other worker writes its usage within a second
    while _usage_requests(gateway2) - usage_before < 50 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _usage_requests(gateway2) - usage_before == 50


def test_cancel_names_the_worker_when_not_found(gateway2: ServerProcess) -> None:
    resp = _fresh("DELETE", gateway2.url + "/debug/requests/nowhere")
    assert resp.status_code == 404
    assert "another of the 2 workers" in resp.json()["error"]["message"]


@pytest.mark.parametrize("count", ["0", "65"])
def test_worker_count_is_checked(tmp_path: Path, count: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    done = subprocess.run(
        [sys.executable, "-m", "lmgate", "serve", "--data-dir", str(tmp_path), "--workers", count],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert f"workers must be between 1 and 64, not {count}" in done.stderr


def _gone(pid: int, within: float = 3.0) -> bool:
    """The process ended (a zombie waiting for init counts as ended)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_demo_fallback_and_sigterm_stop_every_worker(tmp_path: Path) -> None:
    """The parent starts the demo emulator once; SIGTERM stops workers and emulator."""
    port = free_port()
    env = clean_env(LMGATE_DATA_DIR=str(tmp_path / "data"), LMGATE_ADMIN_KEY=ADMIN_KEY)
    # nothing chosen and (in all likelihood) nothing on LM Studio's port: demo mode, or the
    # real LM Studio if one answers; either way every worker must serve the same upstream
    server = ServerProcess(
        serve_argv(port, "--demo-fallback", "--workers", "2"),
        port=port,
        ready_path="/health",
        env=env,
        cwd=tmp_path,
        log=tmp_path / "gateway.log",
    ).start(timeout=30)
    try:
        workers = per_worker(server, "/debug/status")
        models = _parallel(10, lambda _: _fresh("GET", server.url + "/v1/models"))
        assert all(r.status_code == 200 for r in models)
        children = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(server.proc.pid if server.proc else 0)],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert server.proc is not None
        started = time.monotonic()
        server.proc.terminate()
        server.proc.wait(timeout=15)
        assert time.monotonic() - started < 8
        assert server.proc.returncode == 0
        for pid in [*workers, *map(int, children)]:
            assert _gone(pid), f"process {pid} outlived the gateway"
        if "DEMO MODE" in server.logs():
            assert "Application shutdown complete" in server.logs()
    finally:
        server.stop()


def test_handoff_carries_settings_and_secrets_exactly(tmp_path: Path) -> None:
    from lmgate.settings import Settings
    from lmgate.workers.handoff import Handoff

    settings = Settings(
        admin_key="adm-secret-1",
        api_keys=["k-one", "k-two"],
        upstream_token="tok-secret",
        data_dir=tmp_path,
        workers=3,
        allow=["10.0.0.0/8"],
    )
    back = Handoff.decode(Handoff(settings, tmp_path / "run").encode())
    assert back.settings == settings
    assert back.settings.model_fields_set == settings.model_fields_set
    assert back.run_dir == tmp_path / "run"


def test_handoff_errors_never_quote_values(tmp_path: Path) -> None:
    import orjson

    from lmgate.settings import Settings
    from lmgate.workers.handoff import Handoff

    text = Handoff(Settings(admin_key="adm-secret-1", data_dir=tmp_path), tmp_path).encode()
    payload = orjson.loads(text)
    payload["settings"]["port"] = "adm-secret-1"  # an invalid value that is also a secret
    with pytest.raises(RuntimeError) as caught:
        Handoff.decode(orjson.dumps(payload).decode())
    assert "port" in str(caught.value)
    assert "adm-secret-1" not in str(caught.value)


def test_shared_limits_count_every_worker(tmp_path: Path) -> None:
    """Two limiters on one file behave as one: rpm, maxConcurrent and tpm, with expiry."""
    from lmgate.errors import TooManyRequests
    from lmgate.exchange import Exchange
    from lmgate.guard.keys import Principal
    from lmgate.guard.paths import Scope
    from lmgate.guard.shared_limits import SharedRateLimiter

    now = [1000.0]
    a, b = (SharedRateLimiter(tmp_path / "limits.sqlite3", clock=lambda: now[0]) for _ in "ab")
    key = Principal("k1", "k", Scope.INFERENCE, rpm=3, tpm=25, max_concurrent=2)

    def admit(limiter: SharedRateLimiter) -> Exchange:
        ex = Exchange("r", "POST", "/v1/chat/completions", "127.0.0.1")
        limiter.admit(key, ex, inference=True)
        return ex

    first, second = admit(a), admit(b)
    with pytest.raises(TooManyRequests) as over:
        admit(a)
    assert over.value.code == "concurrency_limit_exceeded"
    a.on_finish(first)
    b.on_finish(second)
    assert a.in_flight("k1") == 0
    a.on_finish(admit(a))
    with pytest.raises(TooManyRequests) as over:
        admit(b)
    assert over.value.code == "rate_limit_exceeded"
    now[0] += 61
    heavy = admit(a)
    heavy.tokens_in = 30
    a.on_finish(heavy)
    with pytest.raises(TooManyRequests) as over:
        admit(b)
    assert over.value.code == "token_rate_limit_exceeded"
    now[0] += 61
    b.on_finish(admit(b))
    a.close()
    b.close()
