"""A gateway-level alias that names a different key on each of two upstreams: requests for it
are placed across both (a free slot first, else the first to free), each body names the chosen
upstream's own key (a retry elsewhere too), and keys' model patterns apply to the alias."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.servers import ADMIN_KEY, ServerProcess, start_emulator, start_gateway
from tests.upstreams.conftest import catalog, listed, wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
ALIAS = "qwen-small"
A_KEY = "alpha/qwen3-4b"  # the alias on a
B_KEY = "beta/qwen3-4b-instruct"  # the alias on b
OTHER = "alpha/other-1b"  # on a only, never loaded
KEY_OF = {"a": A_KEY, "b": B_KEY}
Servers = dict[str, ServerProcess]


def _config(tmp: Path, a: ServerProcess, b: ServerProcess, weight_a: float = 1.0) -> str:
    path = tmp / "lmgate.toml"
    path.write_text(
        f'[[upstreams]]\nname = "a"\nurl = "{a.url}"\nweight = {weight_a}\n'
        f'aliases = {{ "{ALIAS}" = "{A_KEY}" }}\n\n'
        f'[[upstreams]]\nname = "b"\nurl = "{b.url}"\n'
        f'aliases = {{ "{ALIAS}" = "{B_KEY}" }}\n'
    )
    return str(path)


def _pair(tmp: Path, token_delay: str) -> tuple[ServerProcess, ServerProcess]:
    common = ("--no-sdk", "--token-delay", token_delay, "--parallel", "1")
    a = start_emulator(tmp, *common, "--models", catalog(tmp, "a", A_KEY, OTHER), name="a")
    b = start_emulator(tmp, *common, "--models", catalog(tmp, "b", B_KEY), name="b")
    return a, b


def _loaded_on_both(gw: ServerProcess) -> bool:
    answer = httpx.get(gw.url + "/v1/models", headers=ADMIN, timeout=5)
    if answer.status_code != 200:
        return False
    entry = next((e for e in answer.json()["data"] if e["id"] == ALIAS), None)
    return entry is not None and sorted(entry["lmgate"]["loadedOn"]) == ["a", "b"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    tmp = tmp_path_factory.mktemp("aliases")
    a, b = _pair(tmp, "0.4")  # a whole answer takes ~10 s: long enough to hold a slot
    env = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "0.5"}
    gw = start_gateway(tmp, a.url, "--config", _config(tmp, a, b), env=env)
    servers = {"a": a, "b": b, "gateway": gw}
    try:
        wait_for(listed(gw, ALIAS, A_KEY, B_KEY))
        wait_for(lambda: _loaded_on_both(gw))
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _sdk(gw: ServerProcess, key: str = ADMIN_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=60)


def _bodies(server: ServerProcess, tag: str) -> list[dict[str, Any]]:
    """The chat bodies `server` received whose text carries `tag`."""
    items = httpx.get(server.url + "/__emulator/requests", timeout=5).json()
    items = items["requests"] if isinstance(items, dict) else items
    found = []
    for item in items:
        if not str(item.get("path", "")).endswith("/chat/completions"):
            continue
        body = item.get("body")
        if isinstance(body, str | bytes):
            body = orjson.loads(body)
        if isinstance(body, dict) and tag in orjson.dumps(body).decode():
            found.append(body)
    return found


def _landed(servers: Servers, tag: str) -> str:
    """The one upstream that received the request tagged `tag`, checked to name its own key."""
    where = {name: _bodies(servers[name], tag) for name in ("a", "b")}
    got = [name for name, bodies in where.items() if bodies]
    assert len(got) == 1, where
    (name,) = got
    (body,) = where[name]
    assert body["model"] == KEY_OF[name], body
    return name


def _hold(gw: ServerProcess, tag: str) -> Any:
    """A streamed answer for the alias, started (so it holds a slot) and left open."""
    stream = _sdk(gw).chat.completions.create(
        model=ALIAS, messages=[{"role": "user", "content": tag}], stream=True
    )
    next(iter(stream))
    return stream


def _ask(gw: ServerProcess, tag: str, key: str = ADMIN_KEY, model: str = ALIAS) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": tag}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(gw.url + "/v1/chat/completions", json=body, headers=headers, timeout=60)


def _waiting(gw: ServerProcess) -> int:
    queue = httpx.get(gw.url + "/debug/queue", headers=ADMIN, timeout=5).json()
    return int(queue["waitingTotal"])


def test_a_busy_upstream_sends_the_alias_to_the_other_by_its_own_key(pair: Servers) -> None:
    gw = pair["gateway"]
    held = _hold(gw, "alias-hold-1")
    try:
        first = _landed(pair, "alias-hold-1")
        reply = _sdk(gw).chat.completions.create(
            model=ALIAS, messages=[{"role": "user", "content": "alias-next-1"}], max_tokens=2
        )
        assert reply.choices
        second = _landed(pair, "alias-next-1")
        assert {first, second} == {"a", "b"}  # both upstreams serve the one alias
    finally:
        held.close()
    for name in ("a", "b"):
        assert not any(b["model"] == ALIAS for b in _bodies(pair[name], "alias-"))


@contextlib.contextmanager
def _both_held(pair: Servers, tag: str) -> Iterator[dict[str, Any]]:
    """A slow stream for the alias on each upstream (by where it landed), closed at the end."""
    gw = pair["gateway"]
    wait_for(lambda: _waiting(gw) == 0 and _loaded_on_both(gw))
    holds = {}
    try:
        for n in (1, 2):
            stream = _hold(gw, f"{tag}-{n}")
            holds[_landed(pair, f"{tag}-{n}")] = stream
        assert sorted(holds) == ["a", "b"]
        yield holds
    finally:
        for stream in holds.values():
            stream.close()


def test_with_both_busy_the_alias_waits_for_the_first_to_free(pair: Servers) -> None:
    gw = pair["gateway"]
    with _both_held(pair, "alias-both") as holds:
        answers: list[httpx.Response] = []
        waiter = threading.Thread(target=lambda: answers.append(_ask(gw, "alias-queued-3")))
        waiter.start()
        wait_for(lambda: _waiting(gw) == 1)
        time.sleep(0.3)
        assert not _bodies(pair["a"], "alias-queued-3") and not _bodies(pair["b"], "alias-queued-3")
        holds.pop("b").close()  # b frees first: the waiting request goes there, as b's key
        waiter.join(60)
        (answer,) = answers
        assert answer.status_code == 200, answer.text
        assert int(answer.headers["x-queue-position"]) == 1
        assert _landed(pair, "alias-queued-3") == "b"


def test_a_stream_told_its_place_while_it_waited_goes_where_it_was_admitted(
    pair: Servers,
) -> None:
    """A waiting stream's answer starts early (queue comments); the upstream it is admitted
    on later is still the one it is sent to, as that upstream's key."""
    gw = pair["gateway"]
    with _both_held(pair, "alias-told") as holds:
        lines: list[str] = []

        def wait_streaming() -> None:
            body = {
                "model": ALIAS,
                "messages": [{"role": "user", "content": "alias-told-3"}],
                "max_tokens": 2,
                "stream": True,
            }
            url = gw.url + "/v1/chat/completions"
            with httpx.stream("POST", url, json=body, headers=ADMIN, timeout=60) as answer:
                lines.extend(answer.iter_lines())

        waiter = threading.Thread(target=wait_streaming)
        waiter.start()
        wait_for(lambda: any(line.startswith(": queued") for line in lines) or _told(gw))
        holds.pop("b").close()
        waiter.join(60)
        assert any(line.startswith(": queued") for line in lines), lines
        assert "data: [DONE]" in lines, lines
        assert _landed(pair, "alias-told-3") == "b"


def _told(gw: ServerProcess) -> bool:
    """Waiting long enough that its answer has started (a second, and a margin)."""
    if _waiting(gw) != 1:
        return False
    time.sleep(2.5)
    return True


def _key(gw: ServerProcess, name: str, models: list[str]) -> str:
    made = httpx.post(
        gw.url + "/admin/keys", json={"name": name, "models": models}, headers=ADMIN, timeout=10
    )
    assert made.status_code == 201, made.text
    return str(made.json()["key"])


def _ids(gw: ServerProcess, key: str, path: str = "/v1/models") -> set[str]:
    answer = httpx.get(gw.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    listing = answer.json()
    if "data" in listing:
        return {e["id"] for e in listing["data"]}
    return {e["key"] for e in listing["models"]}


def test_a_model_path_naming_the_alias_asks_an_upstream_by_its_own_key(pair: Servers) -> None:
    gw = pair["gateway"]
    answer = httpx.get(gw.url + "/api/v0/models/" + ALIAS, headers=ADMIN, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] in (A_KEY, B_KEY)
    missing = httpx.get(gw.url + "/api/v0/models/qwen-nowhere", headers=ADMIN, timeout=10)
    assert missing.status_code == 404


def test_a_keys_model_patterns_apply_to_the_alias_the_client_named(pair: Servers) -> None:
    gw = pair["gateway"]
    wait_for(lambda: _waiting(gw) == 0)
    by_alias = _key(gw, "alias-only", ["qwen-*"])
    assert _ask(gw, "alias-pattern-1", by_alias).status_code == 200
    assert _landed(pair, "alias-pattern-1") in ("a", "b")  # sent as that upstream's key
    # The alias grants its name only: an upstream's own key must match the patterns itself.
    for model in (A_KEY, B_KEY):
        refused = _ask(gw, "alias-pattern-2", by_alias, model=model)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert _ids(gw, by_alias) == {ALIAS}
    assert _ids(gw, by_alias, "/api/v1/models") == {ALIAS}
    assert [m.id for m in _sdk(gw, by_alias).models.list()] == [ALIAS]

    by_key = _key(gw, "alpha-only", ["alpha/*"])
    refused = _ask(gw, "alias-pattern-3", by_key)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"
    assert _ask(gw, "alias-pattern-4", by_key, model=A_KEY).status_code == 200
    assert _landed(pair, "alias-pattern-4") == "a"
    assert _ids(gw, by_key) == {A_KEY, OTHER}  # neither the alias nor b's key
    assert not _bodies(pair["a"], "alias-pattern-2") and not _bodies(pair["b"], "alias-pattern-2")
    assert not _bodies(pair["a"], "alias-pattern-3") and not _bodies(pair["b"], "alias-pattern-3")


def test_a_retry_elsewhere_names_the_other_upstreams_key(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, "0.002")
    # Model lists are read rarely: only the request itself finds a gone, and moves to b.
    env = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "60"}
    gw = start_gateway(tmp_path, a.url, "--config", _config(tmp_path, a, b, 5.0), env=env)
    servers = {"a": a, "b": b, "gateway": gw}
    try:
        wait_for(lambda: _loaded_on_both(gw))
        assert _ask(gw, "alias-retry-1").status_code == 200
        assert _landed(servers, "alias-retry-1") == "a"  # a weighs more
        assert a.proc is not None
        a.proc.kill()
        a.proc.wait()
        answer = _ask(gw, "alias-retry-2")
        assert answer.status_code == 200, answer.text
        (body,) = _bodies(b, "alias-retry-2")
        assert body["model"] == B_KEY
        seen = ""
        url = gw.url + "/debug/stream?types=request_retried"
        with httpx.stream("GET", url, headers={**ADMIN, "Last-Event-ID": "0"}, timeout=10) as s:
            for line in s.iter_lines():
                seen += line.replace(" ", "") + "\n"
                if '"to":"b"' in seen:
                    break
        assert '"upstream":"a"' in seen and f'"model":"{ALIAS}"' in seen
    finally:
        for server in servers.values():
            server.stop()


def test_two_workers_place_the_alias_on_both_upstreams(tmp_path: Path) -> None:
    a, b = _pair(tmp_path, "0.05")
    env = {"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "0.5"}
    gw = start_gateway(
        tmp_path, a.url, "--config", _config(tmp_path, a, b), "--workers", "2", env=env
    )
    try:
        wait_for(lambda: _loaded_on_both(gw), timeout=60)

        def ask(i: int) -> tuple[int, int]:
            body = {
                "model": ALIAS,
                "messages": [{"role": "user", "content": f"alias-workers-{i}"}],
                "max_tokens": 4,
            }
            with httpx.Client(headers=ADMIN, timeout=30) as client:  # a new connection
                answer = client.post(gw.url + "/v1/chat/completions", json=body)
                status = client.get(gw.url + "/debug/status").json()
                return int(status["worker"]["index"]), answer.status_code

        with ThreadPoolExecutor(8) as pool:
            # Until each worker has read both model lists, one may not know the alias yet.
            wait_for(lambda: all(r[1] == 200 for r in pool.map(ask, range(8))), timeout=60)
            for emulator in (a, b):
                httpx.delete(emulator.url + "/__emulator/requests", timeout=5)
            workers: set[int] = set()
            for _ in range(10):  # which worker accepts a connection is the kernel's choice
                for worker, status in pool.map(ask, range(8)):
                    assert status == 200
                    workers.add(worker)
                if workers == {0, 1}:
                    break
        assert workers == {0, 1}
        for server, key in ((a, A_KEY), (b, B_KEY)):
            bodies = _bodies(server, "alias-workers-")
            assert bodies, "each upstream took some: one slot each, eight at once"
            assert {body["model"] for body in bodies} == {key}
    finally:
        for server in (gw, a, b):
            server.stop()
