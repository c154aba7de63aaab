"""Key attributes and model policy in the scheduler, end to end: a real gateway in front of the
LM Studio emulator, keys made through the admin API, real clients over loopback.

Keys: `loads deny` (409 `load_denied`), `max-loads-per-hour` (429 `load_limit`), weights (share
of admissions on one slot), priority (first). Profiles: `slots`, `ttl`, `pinned`. Preload."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.observe.helpers import EventReader
from tests.servers import (
    ADMIN_KEY,
    ServerProcess,
    admin_headers,
    start_emulator,
    start_gateway,
    upstream_requests,
)

QWEN = "qwen/qwen3-4b"
GEMMA = "google/gemma-3-1b"
BASE = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "0.3"}
SWITCHING = {
    "LMGATE_ON_DEMAND_LOAD": "true",
    "LMGATE_MAX_LOADED_MODELS": "1",
    "LMGATE_MANAGE_ALL_MODELS": "true",
}


def _until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _queue(gw: ServerProcess) -> dict[str, Any]:
    queue: dict[str, Any] = httpx.get(gw.url + "/debug/queue", headers=admin_headers()).json()
    return queue


def _stats(emu: ServerProcess) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(emu.url + "/__emulator/generations").json()
    return stats


def _loaded(emu: ServerProcess) -> set[str]:
    models = httpx.get(emu.url + "/api/v1/models").json()["models"]
    return {m["key"] for m in models if m["loaded_instances"]}


def _key(gw: ServerProcess, name: str, **attrs: Any) -> str:
    resp = httpx.post(gw.url + "/admin/keys", json={"name": name, **attrs}, headers=admin_headers())
    assert resp.status_code == 201, resp.text
    key: str = resp.json()["key"]
    return key


def _chat(
    gw: ServerProcess, key: str, model: str = QWEN, tokens: int = 2, **extra: Any
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **extra.pop("headers", {})}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": tokens}
    return httpx.post(
        gw.url + "/v1/chat/completions", json={**body, **extra}, headers=headers, timeout=120
    )


@pytest.fixture
def servers(tmp_root: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """An emulator and a gateway, started by `start(emulator_args, gateway_env)`."""
    started: list[ServerProcess] = []

    def start(emu_args: tuple[str, ...], env: dict[str, str]) -> tuple[Any, Any]:
        emu = start_emulator(tmp_root, *emu_args, name=f"emu-{request.node.name[:40]}")
        started.append(emu)
        gw = start_gateway(tmp_root, emu.url, env={**BASE, **env})
        started.append(gw)
        _until(lambda: _queue(gw)["upstreams"] and httpx.get(gw.url + "/health").is_success)
        return emu, gw

    yield start
    for server in reversed(started):
        server.stop()


def _error(resp: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = resp.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    return error


@pytest.mark.parametrize("on_demand", [True, False], ids=["on-demand", "jit"])
def test_a_key_that_may_not_load_gets_409_for_an_unloaded_model_and_uses_loaded_ones(
    servers: Any, on_demand: bool
) -> None:
    """With on-demand loading lmgate would load it; without, LM Studio's JIT loading would:
    either way the key is refused before anything reaches the upstream."""
    env = SWITCHING if on_demand else {}
    emu, gw = servers((), env)
    denied = _key(gw, "no-loads", loads="deny")
    _until(lambda: QWEN in _loaded(emu))
    resp = _chat(gw, denied, GEMMA)
    assert resp.status_code == 409, resp.text
    error = _error(resp)
    assert error["code"] == "load_denied" and error["type"] == "invalid_request_error"
    assert GEMMA in error["message"] and "may not load" in error["message"]
    assert _loaded(emu) == {QWEN}
    with httpx.Client(base_url=emu.url) as up:
        assert not any(GEMMA in str(r.get("body")) for r in upstream_requests(up))
    assert _chat(gw, denied, QWEN).status_code == 200  # a loaded model: served
    # An inference key that never chose follows the setting's default (allow): it loads.
    allowed = _key(gw, "default-loads")
    assert _chat(gw, allowed, GEMMA).status_code == 200
    # Now the model is loaded (and the gateway has seen it): the key that may not load uses
    # it like any other.
    _until(lambda: GEMMA in _loaded(emu))
    _until(lambda: any(m["model"] == GEMMA for m in _queue(gw)["models"]))
    assert _chat(gw, denied, GEMMA).status_code == 200


def test_the_loads_default_follows_the_setting_and_an_update_applies_at_once(
    servers: Any,
) -> None:
    emu, gw = servers((), {**SWITCHING, "LMGATE_KEY_LOADS_DEFAULT": "deny"})
    key = _key(gw, "follows-default")
    listed = httpx.get(gw.url + "/admin/keys/follows-default", headers=admin_headers()).json()
    assert listed["loads"] == "deny" and listed["loadsDefault"] is True
    assert _error(_chat(gw, key, GEMMA))["code"] == "load_denied"
    admin = _chat(gw, ADMIN_KEY, QWEN)  # an admin key (from settings) may load by default
    assert admin.status_code == 200
    patched = httpx.patch(
        gw.url + "/admin/keys/follows-default", json={"loads": "allow"}, headers=admin_headers()
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["loads"] == "allow" and patched.json()["loadsDefault"] is False
    assert _chat(gw, key, GEMMA).status_code == 200  # the next request sees the change
    assert _loaded(emu) == {GEMMA}


def test_max_loads_per_hour_gives_429_load_limit_with_retry_after(servers: Any) -> None:
    emu, gw = servers(("--load-delay", "0.1"), SWITCHING)
    capped = _key(gw, "capped", maxLoadsPerHour=1)
    assert _chat(gw, capped, GEMMA).status_code == 200  # its one load this hour
    assert _loaded(emu) == {GEMMA}
    resp = _chat(gw, capped, QWEN)
    assert resp.status_code == 429, resp.text
    error = _error(resp)
    assert error["code"] == "load_limit" and error["type"] == "rate_limit_error"
    assert 1 <= int(resp.headers["retry-after"]) <= 3600
    assert _chat(gw, capped, GEMMA).status_code == 200  # what is loaded stays usable
    other = _key(gw, "uncapped")
    assert _chat(gw, other, QWEN).status_code == 200  # other keys are not charged
    assert _loaded(emu) == {QWEN}


def _blocker(gw: ServerProcess, key: str) -> socket.socket:
    """A slow stream that holds the model's only slot until its socket is closed."""
    body = json.dumps(
        {
            "model": QWEN,
            "messages": [{"role": "user", "content": "blocker"}],
            "max_tokens": 200,
            "stream": True,
        }
    ).encode()
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + key.encode()
        + b"\r\nx-emulator-token-delay: 0.5\r\nContent-Type: application/json\r\n"
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    return sock


def _served_order(emu: ServerProcess) -> list[str]:
    """The `user` of each chat request the upstream received, in order (one slot: serial)."""
    with httpx.Client(base_url=emu.url) as up:
        bodies = [r.get("body") for r in upstream_requests(up)]
    users = []
    for body in bodies:
        if isinstance(body, str):
            body = json.loads(body)
        if isinstance(body, dict) and body.get("user"):
            users.append(str(body["user"]))
    return users


def _backlog(
    gw: ServerProcess, emu: ServerProcess, batches: list[tuple[str, str, int]]
) -> list[str]:
    """Hold the one slot, queue every batch (key, label, count) in order, let go, and return
    the labels in the order the upstream served them."""
    blocker = _blocker(gw, ADMIN_KEY)
    _until(lambda: _stats(emu)["generating"].get(QWEN) == 1)
    total = sum(n for _, _, n in batches)
    with concurrent.futures.ThreadPoolExecutor(total) as pool:
        futures = []
        for key, label, count in batches:
            queued = len(_queue(gw)["waiting"])
            futures += [pool.submit(_chat, gw, key, user=label) for _ in range(count)]
            _until(lambda q=queued + count: len(_queue(gw)["waiting"]) >= q)  # type: ignore[misc]
        blocker.close()  # the slot is free: the queue is served in the scheduler's order
        assert all(f.result().status_code == 200 for f in futures)
    order = [u for u in _served_order(emu) if u != "blocker"]
    assert len(order) == total
    return order


def test_weights_share_one_slot_three_to_one_between_backlogged_keys(servers: Any) -> None:
    emu, gw = servers(("--parallel", "1", "--token-delay", "0.01"), {"LMGATE_QUEUE_MAX": "128"})
    heavy = _key(gw, "heavy", weight=3)
    light = _key(gw, "light", weight=1)
    # The light key queues first: arrival order alone would serve it first.
    order = _backlog(gw, emu, [(light, "light", 24), (heavy, "heavy", 24)])
    both_waiting = order[:24]  # each key still had requests waiting for all of these
    share = Counter(both_waiting)
    assert 14 <= share["heavy"] <= 21, (share, order)  # 3:1 is 18:6
    assert share["light"] >= 3, (share, order)  # the lighter key is not starved
    # An equal-weight control: the same backlog splits about evenly.
    httpx.patch(gw.url + "/admin/keys/heavy", json={"weight": 1}, headers=admin_headers())
    httpx.delete(emu.url + "/__emulator/requests")
    order = _backlog(gw, emu, [(light, "light", 12), (heavy, "heavy", 12)])
    even = Counter(order[:12])
    assert 4 <= even["heavy"] <= 8, (even, order)


def test_a_priority_key_is_served_before_keys_that_queued_earlier(servers: Any) -> None:
    emu, gw = servers(("--parallel", "1", "--token-delay", "0.01"), {})
    batch = _key(gw, "batch", priority=-1)
    normal = _key(gw, "normal")
    urgent = _key(gw, "urgent", scope="admin", priority=1)
    order = _backlog(gw, emu, [(batch, "batch", 3), (normal, "normal", 4), (urgent, "urgent", 2)])
    assert order == ["urgent"] * 2 + ["normal"] * 4 + ["batch"] * 3, order


def _profile(gw: ServerProcess, model: str, method: str = "PATCH", **body: Any) -> Any:
    resp = httpx.request(
        method, f"{gw.url}/admin/models/{model}/profile", json=body, headers=admin_headers()
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_a_profile_with_one_slot_serialises_its_model(servers: Any) -> None:
    emu, gw = servers(("--token-delay", "0.05"), {})
    key = _key(gw, "k")
    stored = _profile(gw, QWEN, "PUT", slots=1, defaultInference={"temperature": 0.3})
    assert stored["slots"] == 1 and stored["defaultInference"] == {"temperature": 0.3}
    _until(lambda: any(m["slots"] == 1 for m in _queue(gw)["models"] if m["model"] == QWEN))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: _chat(gw, key, tokens=10, stream=True), range(4)))
    assert all(r.status_code == 200 for r in results)
    assert _stats(emu)["peak_generating"][QWEN] == 1  # the upstream's 4 slots, used one by one
    assert any("x-queue-position" in r.headers for r in results)
    # Back to what the upstream reports (4): answers run side by side again.
    _profile(gw, QWEN, slots=None)
    _until(lambda: any(m["slots"] == 4 for m in _queue(gw)["models"] if m["model"] == QWEN))
    kept = httpx.get(f"{gw.url}/admin/models/{QWEN}/profile", headers=admin_headers()).json()
    assert kept["defaultInference"] == {"temperature": 0.3}  # PATCH kept the rest


def test_a_profile_ttl_unloads_its_model_after_idleness(servers: Any) -> None:
    emu, gw = servers(("--load-delay", "0.1"), {"LMGATE_ON_DEMAND_LOAD": "true"})
    key = _key(gw, "k")
    _profile(gw, GEMMA, ttl=1)
    reader = EventReader(gw.url, "?types=model_idle_unloaded")
    try:
        reader.next("connected")
        loaded_at = time.monotonic()
        assert _chat(gw, key, GEMMA).status_code == 200
        gone = reader.next("model_idle_unloaded", timeout=20)
        assert gone["modelKey"] == GEMMA
        assert time.monotonic() - loaded_at >= 0.9
    finally:
        reader.close()
    assert GEMMA not in _loaded(emu)
    _profile(gw, GEMMA, ttl=0)  # 0: never, even with a default TTL
    assert _chat(gw, key, GEMMA).status_code == 200
    time.sleep(2.5)
    assert GEMMA in _loaded(emu)


def test_a_pinned_model_stays_through_a_switch_that_needs_room(
    servers: Any, tmp_root: Path
) -> None:
    catalog = tmp_root / "three-llms.json"
    names = ["a/first", "b/second", "c/third"]
    catalog.write_text(
        json.dumps([{"key": n, "type": "llm", "max_context_length": 4096} for n in names])
    )
    first, second, third = names
    env = {**SWITCHING, "LMGATE_MAX_LOADED_MODELS": "2"}
    emu, gw = servers(("--models", str(catalog), "--load-delay", "0.1"), env)
    _until(lambda: any(m["model"] == first for m in _queue(gw)["models"]))
    key = _key(gw, "k")
    _profile(gw, first, pinned=True)
    assert _chat(gw, key, second).status_code == 200  # room for two: nothing evicted
    assert _loaded(emu) == {first, second}
    # The least recently used model is `first` (never used), but it is pinned.
    assert _chat(gw, key, third).status_code == 200
    assert _loaded(emu) == {first, third}
    pinned = {m["model"]: m["pinned"] for m in _queue(gw)["models"]}
    assert pinned == {first: True, third: False}
    # Unpinned, the least recently used goes first.
    _profile(gw, first, pinned=False)
    assert _chat(gw, key, second).status_code == 200
    assert _loaded(emu) == {second, third}


PRELOADS = {
    # lmgate loads on demand: through the scheduler, whose own the model then is
    "scheduler": (("--no-preload",), {"LMGATE_ON_DEMAND_LOAD": "true"}, "loaded", {GEMMA}),
    # it does not: loaded as the admin route loads it
    "admin-load": (("--no-preload",), {}, "loaded", {GEMMA}),
    # the scheduler's rules refuse: the one room is held by a model someone else loaded
    "refused": (
        (),
        {"LMGATE_ON_DEMAND_LOAD": "true", "LMGATE_MAX_LOADED_MODELS": "1"},
        "refused",
        {QWEN},
    ),
}


@pytest.mark.parametrize("case", PRELOADS)
def test_preload_loads_the_listed_models_at_start_and_logs_refusals(
    tmp_root: Path, case: str
) -> None:
    emu_args, extra, status, loaded = PRELOADS[case]
    emu = start_emulator(tmp_root, *emu_args, "--load-delay", "0.2", name=f"emu-preload-{case}")
    log = tmp_root / f"preload-{case}.log"
    env = {
        **BASE,
        **extra,
        "LMGATE_PRELOAD": f"no-such/model,{GEMMA}",
        "LMGATE_LOG_FILE": str(log),
    }
    gw = None
    try:
        gw = start_gateway(tmp_root, emu.url, env=env)
        _until(lambda: log.exists() and log.read_text().count('"model_preload"') >= 2, 60)
        lines = [json.loads(x) for x in log.read_text().splitlines() if "model_preload" in x]
        outcome = {x["model"]: x for x in lines if x.get("event") == "model_preload"}
        assert outcome["no-such/model"]["status"] == "refused"
        assert outcome[GEMMA]["status"] == status, outcome[GEMMA]
        assert _loaded(emu) == loaded
        if case == "scheduler":
            owned = {m["model"]: m["owned"] for m in _queue(gw)["models"]}
            assert owned == {GEMMA: True}  # lmgate's own: its TTL and eviction apply
        if status == "refused":
            assert "room" in outcome[GEMMA]["reason"]
        assert httpx.get(gw.url + "/health").is_success  # refusals are never fatal
    finally:
        if gw is not None:
            gw.stop()
        emu.stop()


def test_only_the_primary_worker_preloads(tmp_root: Path) -> None:
    emu = start_emulator(tmp_root, "--no-preload", name="emu-preload-workers")
    gw = None
    try:
        env = {**BASE, "LMGATE_PRELOAD": GEMMA}
        gw = start_gateway(tmp_root, emu.url, "--workers", "2", env=env)
        _until(lambda: GEMMA in _loaded(emu))
        time.sleep(2.0)  # the other worker has synced by now too
        assert httpx.get(emu.url + "/__emulator/stats").json()["loads"] == 1
    finally:
        if gw is not None:
            gw.stop()
        emu.stop()


def test_settings_keys_get_the_defaults_and_attributes_are_listed(servers: Any) -> None:
    _, gw = servers((), {"LMGATE_API_KEYS": "sk-settings-key-0123456789"})
    _key(gw, "listed", weight=2.5, priority=-3, loads="deny", maxLoadsPerHour=4)
    listing = httpx.get(gw.url + "/admin/keys", headers=admin_headers()).json()
    mine = next(k for k in listing["keys"] if k["name"] == "listed")
    assert (mine["weight"], mine["priority"], mine["loads"], mine["maxLoadsPerHour"]) == (
        2.5,
        -3,
        "deny",
        4,
    )
    from_settings = {k["name"]: k for k in listing["settingsKeys"]}
    assert from_settings["api-key-1"]["weight"] == 1.0
    assert from_settings["api-key-1"]["priority"] == 0
    assert from_settings["api-key-1"]["loads"] == "allow"
    assert from_settings["admin"]["loads"] == "allow"


def test_waiting_requests_show_their_keys_priority(servers: Any) -> None:
    emu, gw = servers(
        (
            "--parallel",
            "1",
        ),
        {},
    )
    low = _key(gw, "low", priority=-2)
    blocker = _blocker(gw, ADMIN_KEY)
    try:
        _until(lambda: _stats(emu)["generating"].get(QWEN) == 1)
        waiting = threading.Thread(target=_chat, args=(gw, low))
        waiting.start()
        entry = _until(lambda: _queue(gw)["waiting"])[0]
        assert entry["key"] == "low" and entry["priority"] == -2
    finally:
        blocker.close()
    waiting.join(30)


def test_a_profile_change_reaches_every_workers_scheduler(tmp_root: Path) -> None:
    """One worker stores the change; the other reads it from the shared state and applies it."""
    emu = start_emulator(tmp_root, name="emu-policy-workers")
    gw = None
    try:
        gw = start_gateway(tmp_root, emu.url, "--workers", "2", env=BASE)

        def slots() -> int | None:
            with httpx.Client(headers={**admin_headers(), "Connection": "close"}) as c:
                answer = c.get(gw.url + "/debug/queue")  # type: ignore[union-attr]
            if answer.status_code != 200:  # a worker still reaching the shared core: 503
                return None
            models = answer.json()["models"]
            return next((m["slots"] for m in models if m["model"] == QWEN), None)

        _until(lambda: slots() == 4 and slots() == 4)
        _profile(gw, QWEN, slots=2)
        _until(lambda: all(slots() == 2 for _ in range(20)), timeout=30)
    finally:
        if gw is not None:
            gw.stop()
        emu.stop()


def test_a_flood_of_refused_loads_costs_the_upstream_almost_nothing(servers: Any) -> None:
    """A key that may not load, hammering an unloaded model where LM Studio would JIT-load it:
    every request is a 409, the model list is read again at most about once a second (not per
    refusal), memory stays flat, and another key is served meanwhile."""
    import psutil

    emu, gw = servers((), {"LMGATE_SYNC_INTERVAL": "30"})
    denied = _key(gw, "flood", loads="deny")
    normal = _key(gw, "normal")
    assert _chat(gw, denied, GEMMA).status_code == 409  # warm up
    proc = psutil.Process(gw.proc.pid)  # type: ignore[union-attr]
    rss_before = proc.memory_info().rss
    httpx.delete(emu.url + "/__emulator/requests")
    body = {"model": GEMMA, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def hammer(_: int) -> None:
        with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {denied}"}) as c:
            for _ in range(120):
                code = c.post("/v1/chat/completions", json=body).status_code
                with lock:
                    statuses[code] += 1

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        flood = pool.map(hammer, range(10))
        served = []
        while len(served) < 5:
            t = time.monotonic()
            assert _chat(gw, normal, QWEN).status_code == 200
            served.append(time.monotonic() - t)
        list(flood)
    elapsed = time.monotonic() - started
    assert statuses == Counter({409: 1200}), statuses
    assert max(served) < 5.0, served
    with httpx.Client(base_url=emu.url) as up:
        listings = [r for r in upstream_requests(up) if r["path"].endswith("/models")]
        assert not any(GEMMA in str(r.get("body")) for r in upstream_requests(up))
    assert len(listings) <= 2 * (elapsed + 2), (len(listings), elapsed)
    assert proc.memory_info().rss - rss_before < 30 * 2**20
