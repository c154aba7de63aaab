"""Three upstreams behind one gateway: two emulated LM Studio 0.4 servers with different
models and slots, and one plain OpenAI-compatible server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.servers import ADMIN_KEY, ServerProcess, free_port, start_emulator, start_gateway

TOKEN_B = "upstream-b-token-0123456789"
SHARED = "alpha/shared-7b"
ONLY_A = "alpha/only-a"
HIDDEN = "alpha/hidden"
ONLY_B = "beta/only-b"
PLAIN = "gamma/plain-1b"
ALIAS = "small"  # ONLY_A on a, ONLY_B on b


def llm(key: str) -> dict[str, object]:
    return {"key": key, "type": "llm", "max_context_length": 8192}


def catalog(tmp: Path, name: str, *keys: str) -> str:
    path = tmp / f"{name}-models.json"
    path.write_bytes(orjson.dumps([llm(k) for k in keys]))
    return str(path)


def start_openai_server(tmp: Path, *extra: str) -> ServerProcess:
    """The emulator as a plain OpenAI-compatible server (no LM Studio surfaces at all)."""
    import sys

    port = free_port()
    return ServerProcess(
        [sys.executable, "-m", "lmgate.emulator", "--port", str(port), "--openai-only", *extra],
        port=port,
        ready_path="/v1/models",
        log=tmp / f"openai-{port}.log",
    ).start()


def wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def listed(gw: ServerProcess, *models: str) -> Callable[[], bool]:
    def check() -> bool:
        answer = httpx.get(
            gw.url + "/v1/models", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=5
        )
        ids = {e["id"] for e in answer.json().get("data", [])} if answer.status_code == 200 else ()
        return all(m in ids for m in models)

    return check


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("three")
    a = start_emulator(
        tmp,
        "--no-sdk",
        "--token-delay",
        "0.002",
        "--parallel",
        "2",
        "--models",
        catalog(tmp, "a", SHARED, ONLY_A, HIDDEN),
        name="a",
    )
    b = start_emulator(
        tmp,
        "--no-sdk",
        "--token-delay",
        "0.002",
        "--parallel",
        "1",
        "--api-token",
        TOKEN_B,
        "--models",
        catalog(tmp, "b", ONLY_B, SHARED),
        name="b",
    )
    c = start_openai_server(tmp, "--token-delay", "0.002", "--models", catalog(tmp, "c", PLAIN))
    config = tmp / "lmgate.toml"
    config.write_text(
        f"""
[[upstreams]]
name = "a"
url = "{a.url}"
models = ["*", "!{HIDDEN}"]
maxLoadedModels = 2
aliases = {{ {ALIAS} = "{ONLY_A}" }}

[[upstreams]]
name = "b"
url = "{b.url}"
token = "{TOKEN_B}"
slots = 1
aliases = {{ {ALIAS} = "{ONLY_B}" }}

[[upstreams]]
name = "c"
url = "{c.url}"
tags = ["plain"]
"""
    )
    gw = start_gateway(
        tmp,
        a.url,
        "--config",
        str(config),
        env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "0.5"},
    )
    servers = {"a": a, "b": b, "c": c, "gateway": gw}
    try:
        wait_for(listed(gw, SHARED, ONLY_A, ONLY_B, PLAIN))
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def heavier_b(tmp: Path, a_url: str, b_url: str) -> Path:
    """A config of two upstreams, `a` and `b`, where `b` weighs more (it is chosen first)."""
    config = tmp / "lmgate.toml"
    config.write_text(
        f'[[upstreams]]\nname = "a"\nurl = "{a_url}"\n\n'
        f'[[upstreams]]\nname = "b"\nurl = "{b_url}"\nweight = 5\n'
    )
    return config


def buffered_events(gw: ServerProcess, *kinds: str) -> str:
    """The buffered events of these kinds, read from `/debug/stream` from the start until each
    kind has been seen once."""
    seen = ""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Last-Event-ID": "0"}
    url = gw.url + "/debug/stream?types=" + ",".join(kinds)
    with httpx.stream("GET", url, headers=headers, timeout=10) as stream:
        for line in stream.iter_lines():
            seen += line + "\n"
            if all(f"event: {k}" in seen for k in kinds):
                return seen
    raise AssertionError(seen)
