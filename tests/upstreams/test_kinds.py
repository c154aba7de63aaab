"""Ollama and llama.cpp's server are told apart from a plain OpenAI-compatible server and
from LM Studio: their kind is shown, Ollama's native lists give sizes and what is in memory,
llama.cpp's slots are shown, and requests reach them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import ADMIN_KEY, ServerProcess, free_port, start_emulator, start_gateway
from tests.upstreams.conftest import ONLY_A, catalog, listed, wait_for
from tests.upstreams.fake_kinds import SLOTS

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
OLLAMA_IN_MEMORY, OLLAMA_ON_DISK, LLAMA = "llama3.2:1b", "qwen2.5:0.5b", "smollm2"


def _fake(tmp: Path, kind: str, *models: str) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "-m", "tests.upstreams.fake_kinds", kind, str(port), *models]
    return ServerProcess(argv, port=port, ready_path="/v1/models", log=tmp / f"{kind}.log").start()


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("kinds")
    lms = start_emulator(tmp, "--no-sdk", "--models", catalog(tmp, "lms", ONLY_A), name="lms")
    ollama = _fake(tmp, "ollama", OLLAMA_IN_MEMORY, OLLAMA_ON_DISK)
    llama = _fake(tmp, "llamacpp", LLAMA)
    gw = start_gateway(
        tmp,
        f"lms={lms.url}",
        "--upstream",
        f"ollama={ollama.url}",
        "--upstream",
        f"llama={llama.url}",
        env={"LMGATE_ADMIN_KEY": ADMIN_KEY, "LMGATE_SYNC_INTERVAL": "0.5"},
    )
    servers = {"lms": lms, "ollama": ollama, "llama": llama, "gateway": gw}
    try:
        wait_for(listed(gw, ONLY_A, OLLAMA_IN_MEMORY, OLLAMA_ON_DISK, LLAMA))
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def test_each_kind_is_detected_and_shown(kinds: dict[str, ServerProcess]) -> None:
    gw = kinds["gateway"]
    ups = {
        u["name"]: u
        for u in httpx.get(gw.url + "/admin/upstreams", headers=ADMIN, timeout=10).json()[
            "upstreams"
        ]
    }
    assert ups["lms"]["kind"] == "lmstudio-0.4+"
    assert ups["ollama"]["kind"] == "ollama" and ups["ollama"]["capabilities"]["ollama"]
    assert ups["llama"]["kind"] == "llama.cpp" and ups["llama"]["capabilities"]["llamaCpp"]
    assert ups["llama"]["serverSlots"] == SLOTS  # its total_slots, shown
    assert not ups["ollama"]["capabilities"]["modelManagement"]
    assert ups["ollama"]["loaded"] == [OLLAMA_IN_MEMORY]  # /api/ps, not every pulled model
    assert ups["ollama"]["models"] == sorted([OLLAMA_IN_MEMORY, OLLAMA_ON_DISK])


def test_requests_reach_ollama_and_llama_cpp(kinds: dict[str, ServerProcess]) -> None:
    gw = kinds["gateway"]
    for model, name, said in ((OLLAMA_ON_DISK, "ollama", "ollama"), (LLAMA, "llama", "llamacpp")):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(gw.url + "/v1/chat/completions", json=body, headers=ADMIN, timeout=20)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"] == f"{said} says hi"
        seen = httpx.get(kinds[name].url + "/__emulator/requests", timeout=5).json()["requests"]
        assert any(r["body"]["model"] == model for r in seen)
