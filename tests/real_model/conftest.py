"""One real llama.cpp server and one lmgate in front of it, shared by the whole tier.

The engine installs on first use. Where that is impossible (no route to the package index,
no wheel for this platform) the tier is skipped, and the run's summary says so in red, so
nobody mistakes a skipped tier for a passing one. CI must not skip it: with `CI` set, or
`LMGATE_TESTS_REAL_MODEL=require`, an install failure fails the tier instead;
`LMGATE_TESTS_REAL_MODEL=off` skips it on purpose.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.real_model.engine import (
    ALIAS,
    Engine,
    EngineUnavailable,
    ServerConfig,
    command,
    install,
    wait_healthy,
)
from tests.real_model.llama_view import wait_idle
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess, admin_headers, free_port, start_gateway

HERE = Path(__file__).resolve().parent
# Covers the first test's share of the session set-up: a first-run install and model load.
TIER_TIMEOUT_S = 540
CLIENT_TIMEOUT_S = 120.0
IDLE_BEFORE_TEST_S = 300.0

Activate = Callable[..., None]

_skip_reasons: list[str] = []


def _policy() -> str:
    """`require`, `off` or `auto` (skip with a loud reason when the engine cannot install)."""
    chosen = os.environ.get("LMGATE_TESTS_REAL_MODEL", "").strip().lower()
    if chosen in ("require", "off", "auto"):
        return chosen
    return "require" if os.environ.get("CI", "").strip().lower() in ("1", "true") else "auto"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.real_model)
            item.add_marker(pytest.mark.timeout(TIER_TIMEOUT_S))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skip_reasons:
        terminalreporter.section("real-model tier SKIPPED", sep="!", red=True, bold=True)
        terminalreporter.write_line(_skip_reasons[0], red=True)


@pytest.fixture(scope="session")
def engine() -> Engine:
    policy = _policy()
    if policy == "off":
        reason = "LMGATE_TESTS_REAL_MODEL=off: the real-model tier was not run"
        _skip_reasons.append(reason)
        pytest.skip(reason)
    try:
        return install()
    except EngineUnavailable as exc:
        reason = f"the real-model engine could not be installed: {exc}"
        if policy == "require":
            pytest.fail(f"{reason}\n(required here: CI or LMGATE_TESTS_REAL_MODEL=require)")
        _skip_reasons.append(reason)
        pytest.skip(reason)


def start_llama(
    engine: Engine, tmp_root: Path, config: ServerConfig | None = None
) -> ServerProcess:
    """A real server on a free loopback port, healthy (its model loaded); the caller stops it."""
    port = free_port()
    argv, env = command(engine, port, config or ServerConfig())
    server = ServerProcess(
        argv, port=port, ready_path="/health", env=env, log=tmp_root / f"llama-{port}.log"
    )
    server.start(timeout=60)
    try:
        wait_healthy(server.url, lambda: server.proc is not None and server.proc.poll() is None)
    except RuntimeError as exc:
        server.stop()
        raise RuntimeError(f"{exc}\n{server.logs()[-3000:]}") from exc
    return server


@pytest.fixture(scope="session")
def llama(engine: Engine, tmp_root: Path) -> Iterator[ServerProcess]:
    """The real server on a free loopback port; stopped by PID at the end of the session."""
    server = start_llama(engine, tmp_root)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def real_gateway(tmp_root: Path, llama: ServerProcess) -> Iterator[ServerProcess]:
    """lmgate with an admin and an inference key, its upstream the real server."""
    gate = start_gateway(
        tmp_root, llama.url, env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_API_KEYS": API_KEY}
    )
    yield gate
    gate.stop()


@pytest.fixture
def gate_admin(real_gateway: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=real_gateway.url, headers=admin_headers(), timeout=30) as client:
        yield client


@pytest.fixture
def activate(gate_admin: httpx.Client, llama: ServerProcess) -> Iterator[Activate]:
    """`activate(maxTokens=5, ...)`: make the tier's model active with exactly these defaults.

    lmgate keeps a model's defaults in its profile, and applies them to requests naming the
    model even while it is not active; so each call states all of them (none is `{}`), and
    the teardown empties the profile before deactivating, leaving nothing for the next test.
    Each test also starts on an idle server, so work a previous test abandoned cannot share
    a batch with its requests.
    """
    assert wait_idle(llama.url, IDLE_BEFORE_TEST_S), "the server stayed busy"

    def do(**defaults: Any) -> None:
        body = {"modelKey": ALIAS, "defaultInference": defaults}
        gate_admin.post("/admin/models/activate", json=body).raise_for_status()

    yield do
    do()
    gate_admin.post("/admin/models/unload", json={"modelKey": ALIAS}).raise_for_status()


@pytest.fixture
def gate_openai(real_gateway: ServerProcess) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(
        base_url=real_gateway.url + "/v1",
        api_key=API_KEY,
        max_retries=0,
        timeout=CLIENT_TIMEOUT_S,
    )
    yield client
    client.close()


@pytest.fixture
def direct_openai(llama: ServerProcess) -> Iterator[openai.OpenAI]:
    """The same SDK talking to the real server itself: the reference to compare with."""
    client = openai.OpenAI(
        base_url=llama.url + "/v1", api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT_S
    )
    yield client
    client.close()


@pytest.fixture
def gate_anthropic(real_gateway: ServerProcess) -> Iterator[anthropic.Anthropic]:
    # An explicit timeout also keeps the SDK from deriving one from `max_tokens`, which
    # lets a test leave `max_tokens` out for lmgate to fill in.
    client = anthropic.Anthropic(
        base_url=real_gateway.url, api_key=API_KEY, max_retries=0, timeout=CLIENT_TIMEOUT_S
    )
    yield client
    client.close()
