"""Model management across several upstreams: each load, unload, download, activation and
preload acts on the upstream that can do it, and names it in the answer and the events.

Three upstreams: `a` (LM Studio 0.4, heavier, a small memory budget and two model slots), `b`
(LM Studio 0.4, no limits) and `c` (a plain OpenAI-compatible server). Every test starts from
nothing loaded on `a` and `b`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.servers import ADMIN_KEY, ServerProcess, start_emulator, start_gateway
from tests.upstreams.conftest import listed, start_openai_server, wait_for

Servers = dict[str, ServerProcess]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
GB = 1_000_000_000
SHARED = "alpha/shared-7b"  # on a and b
ONLY_A = "alpha/only-a"
EXTRA_A = "alpha/extra-a"
ONLY_B = "beta/only-b"
MORE_B = ("beta/more-1", "beta/more-2")
BIG = "alpha/big-70b"  # on a and b; larger than a's memory budget
PLAIN = "gamma/plain-1b"  # on c only
PRELOAD = f"{ONLY_B},b:{SHARED},{ONLY_A}"


def _catalog(tmp: Path, name: str, *models: tuple[str, int]) -> str:
    path = tmp / f"{name}-models.json"
    entries = [
        {"key": key, "type": "llm", "max_context_length": 8192, "size_bytes": size}
        for key, size in models
    ]
    path.write_bytes(orjson.dumps(entries))
    return str(path)


def _events(gw: ServerProcess, kind: str, done: Callable[[list[dict[str, Any]]], bool]) -> list:
    """The buffered events of `kind` (from the start), read until `done` says enough."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = []
        headers = {**ADMIN, "Last-Event-ID": "0"}
        try:
            with httpx.stream(
                "GET", gw.url + f"/debug/stream?types={kind}", headers=headers, timeout=2
            ) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        event = orjson.loads(line[6:])
                        if event.get("type") == kind:
                            found.append(event)
                        if done(found):
                            return found
        except httpx.ReadTimeout:
            pass
    raise AssertionError(f"{kind}: {found}")


def _loaded(server: ServerProcess) -> dict[str, list[str]]:
    """What an emulator has loaded: model key -> instance ids."""
    models = httpx.get(server.url + "/api/v1/models", timeout=5).json()["models"]
    return {
        m["key"]: [i["id"] for i in m["loaded_instances"]] for m in models if m["loaded_instances"]
    }


def _loaded_on(gw: ServerProcess) -> dict[str, list[str]]:
    """Where the gateway sees each model loaded."""
    answer = httpx.get(gw.url + "/v1/models", headers=ADMIN, timeout=10).json()
    return {e["id"]: e["lmgate"]["loadedOn"] for e in answer["data"] if e["lmgate"]["loadedOn"]}


def _hook_load(server: ServerProcess, model: str, identifier: str | None = None) -> None:
    body = {"model": model, **({"identifier": identifier} if identifier else {})}
    assert httpx.post(server.url + "/__emulator/load", json=body, timeout=5).status_code == 200


def _admin(gw: ServerProcess, path: str, **body: object) -> httpx.Response:
    return httpx.post(gw.url + "/admin/models/" + path, json=body, headers=ADMIN, timeout=30)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("fleet")
    emulated = ("--no-sdk", "--no-preload", "--download-speed", str(GB), "--download-size")
    a = start_emulator(
        tmp,
        *emulated,
        str(2 * GB),
        "--models",
        _catalog(tmp, "a", (SHARED, GB), (ONLY_A, GB), (EXTRA_A, GB), (BIG, 8 * GB)),
        name="a",
    )
    b = start_emulator(
        tmp,
        *emulated,
        str(2 * GB),
        "--models",
        _catalog(tmp, "b", (ONLY_B, GB), (SHARED, GB), (BIG, 8 * GB), *[(m, GB) for m in MORE_B]),
        name="b",
    )
    c = start_openai_server(tmp, "--models", _catalog(tmp, "c", (PLAIN, GB)))
    config = tmp / "lmgate.toml"
    config.write_text(
        f"""
[[upstreams]]
name = "a"
url = "{a.url}"
weight = 3
maxLoadedModels = 2
memoryBudget = "4GB"

[[upstreams]]
name = "b"
url = "{b.url}"

[[upstreams]]
name = "c"
url = "{c.url}"
"""
    )
    env = {
        "LMGATE_ADMIN_KEY": ADMIN_KEY,
        "LMGATE_SYNC_INTERVAL": "0.3",
        "LMGATE_ON_DEMAND_LOAD": "true",
        "LMGATE_PRELOAD": PRELOAD,
        "LMGATE_DOWNLOAD_POLL_SECONDS": "0.2",
    }
    gw = start_gateway(tmp, a.url, "--config", str(config), env=env)
    servers = {"a": a, "b": b, "c": c, "gateway": gw}
    try:
        wait_for(listed(gw, SHARED, ONLY_A, ONLY_B, BIG, PLAIN))
        _events(gw, "model_preload", lambda found: len(found) >= 3)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def clean(fleet: Servers) -> Servers:
    """Nothing loaded on a and b, and the gateway has seen it."""
    gw = fleet["gateway"]
    for name in ("a", "b"):
        httpx.post(fleet[name].url + "/__emulator/reset", timeout=5).raise_for_status()
    wait_for(lambda: _loaded_on(gw) == {PLAIN: ["c"]})  # c lists what it serves as loaded
    return fleet


def _settle(gw: ServerProcess, model: str, where: list[str]) -> None:
    wait_for(lambda: sorted(_loaded_on(gw).get(model, [])) == sorted(where))


# -- loads: the scheduler's placement ----------------------------------------------------------


def test_preload_loads_where_an_admin_load_would_or_where_named(fleet: Servers) -> None:
    found = _events(fleet["gateway"], "model_preload", lambda found: len(found) >= 3)
    where = {e["modelKey"]: (e["status"], e.get("upstream")) for e in found}
    assert where[ONLY_B] == ("loaded", "b"), found  # offered only by b, not the primary
    assert where[f"b:{SHARED}"] == ("loaded", "b"), found  # named, though a weighs more
    assert where[ONLY_A] == ("loaded", "a"), found


def test_a_load_goes_where_it_fits_by_budget_then_weight(clean: Servers) -> None:
    gw = clean["gateway"]
    big = _admin(gw, "load", modelKey=BIG, activate=False)
    assert big.status_code == 200, big.text
    assert big.json()["upstream"] == "b"  # 8 GB is over a's 4 GB budget, a's weight aside
    assert BIG in _loaded(clean["b"]) and BIG not in _loaded(clean["a"])
    _settle(gw, BIG, ["b"])
    shared = _admin(gw, "load", modelKey=SHARED, activate=False)
    assert shared.status_code == 200, shared.text
    assert shared.json()["upstream"] == "a"  # both fit without evicting: the heavier
    assert SHARED in _loaded(clean["a"]) and SHARED not in _loaded(clean["b"])


def test_a_load_prefers_where_it_is_loaded_then_fewest_evictions(clean: Servers) -> None:
    gw = clean["gateway"]
    _hook_load(clean["b"], SHARED)
    _settle(gw, SHARED, ["b"])
    there = _admin(gw, "load", modelKey=SHARED, activate=False)
    assert there.status_code == 200, there.text
    assert there.json()["upstream"] == "b" and there.json()["alreadyLoaded"] is True
    assert SHARED not in _loaded(clean["a"])
    httpx.post(clean["b"].url + "/__emulator/unload", json={"instance_id": SHARED}, timeout=5)
    _settle(gw, SHARED, [])
    for model in (ONLY_A, EXTRA_A):  # a is full: two models lmgate loaded, at its limit
        loaded = _admin(gw, "load", modelKey=model, activate=False)
        assert loaded.status_code == 200 and loaded.json()["upstream"] == "a", loaded.text
    for model in (ONLY_B, *MORE_B):  # b has more models loaded, and room for more
        _hook_load(clean["b"], model)
    _settle(gw, MORE_B[-1], ["b"])
    _settle(gw, EXTRA_A, ["a"])
    placed = _admin(gw, "load", modelKey=SHARED, activate=False)
    assert placed.status_code == 200, placed.text
    assert placed.json()["upstream"] == "b"  # no eviction on b beats one on a, weight aside
    assert SHARED in _loaded(clean["b"]) and SHARED not in _loaded(clean["a"])
    named = _admin(gw, "load", modelKey=ONLY_B, upstream="nowhere")
    assert named.status_code == 404
    assert named.json()["error"]["code"] == "upstream_not_found"


def test_load_events_name_the_upstream(clean: Servers) -> None:
    gw = clean["gateway"]
    assert _admin(gw, "load", modelKey=ONLY_B, activate=False).status_code == 200
    done = _events(
        gw,
        "model_load_complete",
        lambda found: any(e.get("modelKey") == ONLY_B and e.get("upstream") for e in found),
    )
    assert {e["upstream"] for e in done if e.get("modelKey") == ONLY_B} == {"b"}


# -- unloads: where it is loaded ---------------------------------------------------------------


def test_unload_acts_where_the_model_is_loaded(clean: Servers) -> None:
    gw = clean["gateway"]
    _hook_load(clean["b"], ONLY_B)
    _settle(gw, ONLY_B, ["b"])
    gone = _admin(gw, "unload", modelKey=ONLY_B)
    assert gone.status_code == 200, gone.text
    body = gone.json()
    assert body["upstream"] == "b" and body["unloaded"] and body["unloadedOn"] == {"b": [ONLY_B]}
    assert ONLY_B not in _loaded(clean["b"])
    events = _events(
        gw,
        "model_unload_complete",
        lambda found: any(e.get("modelKey") == ONLY_B for e in found),
    )
    assert [e["upstream"] for e in events if e.get("modelKey") == ONLY_B][-1] == "b"


def test_unload_of_a_model_on_two_upstreams_unloads_both_or_the_named_one(
    clean: Servers,
) -> None:
    gw = clean["gateway"]
    for name in ("a", "b"):
        _hook_load(clean[name], SHARED)
    _settle(gw, SHARED, ["a", "b"])
    active = httpx.post(
        gw.url + "/admin/models/activate", json={"modelKey": SHARED}, headers=ADMIN, timeout=10
    )
    assert active.status_code == 200, active.text
    one = _admin(gw, "unload", modelKey=SHARED, upstream="a")
    assert one.status_code == 200, one.text
    assert one.json()["upstream"] == "a" and one.json()["wasActive"] is False  # still on b
    assert SHARED not in _loaded(clean["a"]) and SHARED in _loaded(clean["b"])
    state = httpx.get(gw.url + "/admin/state", headers=ADMIN, timeout=10).json()
    assert state["activeModel"] == SHARED
    _hook_load(clean["a"], SHARED)
    _settle(gw, SHARED, ["a", "b"])
    both = _admin(gw, "unload", modelKey=SHARED)
    assert both.status_code == 200, both.text
    body = both.json()
    assert sorted(body["upstreams"]) == ["a", "b"] and "upstream" not in body
    assert set(body["unloadedOn"]) == {"a", "b"} and len(body["unloaded"]) == 2
    assert body["wasActive"] is True  # gone from every upstream: no longer active
    assert SHARED not in _loaded(clean["a"]) and SHARED not in _loaded(clean["b"])


def test_unload_of_an_instance_finds_its_upstream(clean: Servers) -> None:
    gw = clean["gateway"]
    _hook_load(clean["b"], SHARED, identifier="mine-on-b")
    _settle(gw, SHARED, ["b"])
    gone = _admin(gw, "unload", instanceId="mine-on-b")
    assert gone.status_code == 200, gone.text
    assert gone.json()["upstream"] == "b" and gone.json()["unloaded"] == ["mine-on-b"]
    assert not _loaded(clean["b"])
    nowhere = _admin(gw, "unload", instanceId="mine-on-b")
    assert nowhere.status_code == 404
    assert nowhere.json()["error"]["code"] == "instance_not_found"


def test_unload_errors_name_what_is_missing(clean: Servers) -> None:
    gw = clean["gateway"]
    unknown = _admin(gw, "unload", modelKey=ONLY_B, upstream="nowhere")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "upstream_not_found"
    missing = _admin(gw, "unload", modelKey="nobody/has-this")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    idle = _admin(gw, "unload", modelKey=ONLY_B)  # listed on b, loaded nowhere
    assert idle.status_code == 200 and idle.json()["unloaded"] == []
    assert idle.json()["upstream"] == "b"
    plain = _admin(gw, "unload", modelKey=PLAIN, upstream="c")  # c cannot unload
    assert plain.status_code == 200 and plain.json()["status"] == "cleared"
    assert plain.json()["upstream"] == "c" and plain.json()["workflow"]


# -- downloads: an upstream with the download API ----------------------------------------------


def _status_polls(server: ServerProcess) -> list[str]:
    """The download jobs whose status this emulator was asked for, one entry per ask."""
    seen = httpx.get(server.url + "/__emulator/requests", timeout=5).json()
    items = seen["requests"] if isinstance(seen, dict) else seen
    marker = "/api/v1/models/download/status/"
    return [str(r["path"]).split(marker)[1] for r in items if marker in str(r.get("path"))]


def test_download_runs_on_a_capable_upstream_and_is_followed_there(fleet: Servers) -> None:
    gw = fleet["gateway"]
    chosen = _admin(gw, "download", model="delta/fresh-3b")
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["upstream"] == "a"  # the heavier of a and b; c has no download API
    named = _admin(gw, "download", model="delta/other-3b", upstream="b")
    assert named.status_code == 200, named.text
    job = named.json()
    assert job["upstream"] == "b"

    def ended() -> bool:
        one = httpx.get(gw.url + f"/admin/models/downloads/{job['id']}", headers=ADMIN, timeout=5)
        return one.json()["status"] == "completed"

    wait_for(ended)
    upstream_job = job["upstreamJobId"] or ""
    assert upstream_job in _status_polls(fleet["b"])  # its status was read from b...
    assert upstream_job not in _status_polls(fleet["a"])  # ...never from a
    done = _events(
        gw,
        "model_download_complete",
        lambda found: any(e.get("downloadId") == job["id"] for e in found),
    )
    assert [e["upstream"] for e in done if e.get("downloadId") == job["id"]] == ["b"]
    wait_for(listed(gw, "delta/other-3b"))  # b lists the new model


def test_download_errors_say_why(fleet: Servers) -> None:
    gw = fleet["gateway"]
    plain = _admin(gw, "download", model="delta/fresh-3b", upstream="c")
    assert plain.status_code == 501, plain.text
    assert "'c'" in plain.json()["error"]["message"]
    unknown = _admin(gw, "download", model="delta/fresh-3b", upstream="nowhere")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "upstream_not_found"
    drain = [gw.url + f"/admin/upstreams/{n}/drain" for n in ("a", "b")]
    try:
        for url in drain:
            assert httpx.post(url, headers=ADMIN, timeout=10).status_code == 200
        nobody = _admin(gw, "download", model="delta/fresh-3b")
        assert nobody.status_code == 501, nobody.text
        message = nobody.json()["error"]["message"]
        assert "a (draining)" in message and "b (draining)" in message
        assert "c (openai-compatible" in message
    finally:
        for url in drain:
            httpx.post(url.replace("/drain", "/resume"), headers=ADMIN, timeout=10)


# -- activation: any upstream's models ---------------------------------------------------------


def test_activation_of_a_model_only_another_upstream_offers_needs_no_force(
    fleet: Servers,
) -> None:
    gw = fleet["gateway"]

    def activate(model: str) -> httpx.Response:
        body = {"modelKey": model}
        return httpx.post(gw.url + "/admin/models/activate", json=body, headers=ADMIN, timeout=10)

    for model in (ONLY_B, PLAIN):
        answer = activate(model)
        assert answer.status_code == 200, answer.text
        assert "warning" not in answer.json()
    nobody = activate("nobody/has-this")
    assert nobody.status_code == 404 and nobody.json()["error"]["code"] == "model_not_found"
    assert "no upstream offers" in nobody.json()["error"]["message"]


def test_cli_unloads_on_the_named_upstream(clean: Servers) -> None:
    gw = clean["gateway"]
    for name in ("a", "b"):
        _hook_load(clean[name], SHARED)
    _settle(gw, SHARED, ["a", "b"])
    argv = [sys.executable, "-m", "lmgate", "models", "unload", SHARED, "--url", gw.url]
    env = {**os.environ, "LMGATE_ADMIN_KEY": ADMIN_KEY, "COLUMNS": "200"}
    done = subprocess.run(
        [*argv, "--upstream", "b"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "on b" in done.stdout
    assert SHARED in _loaded(clean["a"]) and SHARED not in _loaded(clean["b"])


def test_every_worker_places_a_load_by_the_same_rules(tmp_path: Path) -> None:
    """A worker that does not host the scheduler ranks on its own watchers' listings."""
    a = start_emulator(
        tmp_path, "--no-sdk", "--no-preload", "--models", _catalog(tmp_path, "a", (BIG, 8 * GB))
    )
    b = start_emulator(
        tmp_path, "--no-sdk", "--no-preload", "--models", _catalog(tmp_path, "b", (BIG, 8 * GB))
    )
    config = tmp_path / "lmgate.toml"
    config.write_text(
        f'[[upstreams]]\nname = "a"\nurl = "{a.url}"\nweight = 3\nmemoryBudget = "4GB"\n\n'
        f'[[upstreams]]\nname = "b"\nurl = "{b.url}"\n'
    )
    env = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "0.3"}
    gw = start_gateway(tmp_path, a.url, "--config", str(config), "--workers", "2", env=env)
    try:
        wait_for(listed(gw, BIG), timeout=60)
        workers: set[int] = set()
        for _ in range(12):
            with httpx.Client(headers=ADMIN, timeout=30) as client:  # a new connection
                worker = int(client.get(gw.url + "/debug/status").json()["worker"]["index"])
                body = {"modelKey": BIG, "activate": False}
                loaded = client.post(gw.url + "/admin/models/load", json=body)
            assert loaded.status_code == 200, loaded.text
            assert loaded.json()["upstream"] == "b", (worker, loaded.json())
            assert loaded.json()["alreadyLoaded"] is False
            workers.add(worker)
            assert not _loaded(a)
            httpx.post(b.url + "/__emulator/reset", timeout=5).raise_for_status()
            time.sleep(1.0)  # every worker's watcher sees it gone
            if workers == {0, 1}:
                break
        assert workers == {0, 1}
    finally:
        gw.stop()
        a.stop()
        b.stop()
