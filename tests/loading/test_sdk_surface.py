"""`SdkSurface` against the emulator over real sockets: loads through LM Studio's SDK with
and without an API token, reports what the upstream says it applied, and turns every
failure (refused handshake, unknown model, upstream gone mid-load) into a GatewayError."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from lmgate.errors import (
    BadRequest,
    NotFound,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from lmgate.loading.sdk import SdkSurface, compare, translate
from lmgate.loading.surface import LoadSpec
from lmgate.settings import Settings
from tests.server_fixtures import emulator_fixture
from tests.servers import ServerProcess, free_port, start_emulator

TOKEN = "sk-lm-Zx8cVb7n:Mq1Wn2Eb3Rv4Tc5Yx6Uz"

GATEWAY_CONFIG: dict[str, Any] = {
    "contextLength": 8192,
    "gpu": {"ratio": 0.75, "layers": 20, "mainGpu": 0, "splitStrategy": "favorMainGpu"},
    "ropeFrequencyBase": 500000.0,
    "ropeFrequencyScale": 0.25,
    "flashAttention": False,
    "evalBatchSize": 128,
    "numExperts": 2,
    "offloadKvCacheToGpu": False,
    "kvCacheQuantK": "q8_0",
    "kvCacheQuantV": "q5_1",
    "keepModelInMemory": False,
    "tryMmap": False,
    "useFp16ForKVCache": False,
    "seed": 99,
    "parallel": 2,
}


def settings(url: str, token: str | None = None, *, load_timeout: float = 60) -> Settings:
    return Settings(
        upstream=url,
        upstream_token=SecretStr(token) if token is not None else None,
        data_dir=Path("/nonexistent-lmgate-test"),
        connect_timeout=2.0,
        load_timeout=load_timeout,
    )


plain = emulator_fixture("--load-delay", "0.2", name="sdk")
guarded = emulator_fixture("--api-token", TOKEN, name="sdk-auth")


@pytest.fixture
def emu(plain: ServerProcess) -> ServerProcess:
    httpx.post(plain.url + "/__emulator/reset", timeout=5).raise_for_status()
    return plain


def received(server: ServerProcess) -> list[dict[str, Any]]:
    configs: list[dict[str, Any]] = httpx.get(
        server.url + "/__emulator/load-configs", timeout=5
    ).json()
    return configs


def loaded_ids(server: ServerProcess) -> set[str]:
    models = httpx.get(server.url + "/api/v1/models", timeout=5).json()["models"]
    return {i["id"] for m in models for i in m["loaded_instances"]}


async def test_load_applies_every_sdk_setting_and_reads_it_back(emu: ServerProcess) -> None:
    surface = SdkSurface(settings(emu.url))
    assert await surface.available() and surface.reason is None
    progress: list[float] = []
    spec = LoadSpec("google/gemma-3-1b", GATEWAY_CONFIG, identifier="gemma-a", ttl=600)
    result = await surface.load(spec, progress.append)

    assert result.surface == "sdk" and result.instance_id == "gemma-a"
    assert 0.15 < result.seconds < 10
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) >= 3
    assert set(result.not_applied) == {"gpu.layers", "parallel"}
    expected = {k: v for k, v in _flat(GATEWAY_CONFIG).items() if k not in result.not_applied}
    assert result.applied == {**expected, "ttl": 600, "identifier": "gemma-a"}
    assert result.effective is not None and result.effective["contextLength"] == 8192

    record = received(emu)[-1]
    fields = record["fields"]
    assert record["identifier"] == "gemma-a" and record["ttl_ms"] == 600_000
    assert fields["llm.load.llama.acceleration.offloadRatio"] == 0.75
    assert fields["load.gpuSplitConfig"]["strategy"] == "priorityOrder"
    assert fields["load.gpuSplitConfig"]["priority"] == [0]
    assert fields["llm.load.llama.vCacheQuantizationType"] == {"checked": True, "value": "q5_1"}
    assert fields["llm.load.offloadKVCacheToGpu"] is False
    assert not any("layers" in key or "parallel" in key for key in fields)
    assert "gemma-a" in loaded_ids(emu)

    await surface.unload("gemma-a")
    assert "gemma-a" not in loaded_ids(emu)


async def test_no_ttl_means_none_not_the_sdk_default(emu: ServerProcess) -> None:
    surface = SdkSurface(settings(emu.url))
    result = await surface.load(LoadSpec("google/gemma-3-1b"), lambda _: None)
    assert result.instance_id == "google/gemma-3-1b"
    assert received(emu)[-1]["ttl_ms"] is None
    assert result.applied == {} and result.not_applied == {}


async def test_embedding_models_take_only_their_settings(emu: ServerProcess) -> None:
    surface = SdkSurface(settings(emu.url))
    spec = LoadSpec(
        "text-embedding-nomic-embed-text-v1.5",
        {"contextLength": 1024, "gpu": {"ratio": "off"}, "flashAttention": True, "seed": 3},
    )
    result = await surface.load(spec, lambda _: None)
    assert result.applied == {"contextLength": 1024, "gpu.ratio": 0.0}
    assert set(result.not_applied) == {"flashAttention", "seed"}
    assert result.instance_id in loaded_ids(emu)
    await surface.unload(result.instance_id)
    assert result.instance_id not in loaded_ids(emu)


async def test_unknown_model_and_instance_are_not_found(emu: ServerProcess) -> None:
    surface = SdkSurface(settings(emu.url))
    with pytest.raises(NotFound) as missing:
        await surface.load(LoadSpec("nobody/nothing-7b"), lambda _: None)
    assert missing.value.code == "model_not_found"
    with pytest.raises(NotFound):
        await surface.unload("never-loaded")


async def test_refusals_of_the_upstream_are_gateway_errors(emu: ServerProcess) -> None:
    surface = SdkSurface(settings(emu.url))
    with pytest.raises(UpstreamError, match="Context length 999999 is outside"):
        await surface.load(LoadSpec("google/gemma-3-1b", {"contextLength": 999999}), print)
    with pytest.raises(BadRequest):
        await surface.load(LoadSpec("google/gemma-3-1b", {"kvCacheQuantK": "q9_9"}), print)
    await surface.load(LoadSpec("google/gemma-3-1b", identifier="taken"), lambda _: None)
    with pytest.raises(UpstreamError, match="already loaded"):
        await surface.load(LoadSpec("google/gemma-3-1b", identifier="taken"), lambda _: None)


async def test_with_the_upstream_token(guarded: ServerProcess) -> None:
    surface = SdkSurface(settings(guarded.url, TOKEN))
    assert await surface.available()
    result = await surface.load(LoadSpec("google/gemma-3-1b", {"seed": 1}), lambda _: None)
    assert result.applied == {"seed": 1}
    await surface.unload(result.instance_id)


@pytest.mark.parametrize("token", [None, TOKEN[:-3] + "abc", "sk-lm-Zx8cVb7n:" + "A" * 20])
async def test_a_refused_handshake_is_reported(guarded: ServerProcess, token: str | None) -> None:
    surface = SdkSurface(settings(guarded.url, token))
    assert not await surface.available()
    assert surface.reason is not None and "handshake" in surface.reason
    with pytest.raises(UpstreamError) as refused:
        await surface.load(LoadSpec("google/gemma-3-1b"), lambda _: None)
    assert refused.value.code == "upstream_auth_failed" and refused.value.status == 502
    assert TOKEN[7:] not in refused.value.message and "Mq1Wn2Eb" not in refused.value.message


async def test_a_token_the_sdk_cannot_send_makes_it_unavailable(guarded: ServerProcess) -> None:
    surface = SdkSurface(settings(guarded.url, "not-an-lm-studio-token"))
    assert not await surface.available()
    assert surface.reason is not None and "LMGATE_UPSTREAM_TOKEN" in surface.reason
    with pytest.raises(UpstreamUnavailable):
        await surface.load(LoadSpec("google/gemma-3-1b"), lambda _: None)


@pytest.mark.parametrize("url", ["https://127.0.0.1:1234", "http://127.0.0.1:1234/lmstudio"])
async def test_upstreams_the_sdk_cannot_reach(url: str) -> None:
    surface = SdkSurface(settings(url))
    assert not await surface.available()
    assert surface.reason


async def test_nothing_listening() -> None:
    surface = SdkSurface(settings(f"http://127.0.0.1:{free_port()}"))
    started = time.monotonic()
    assert not await surface.available()
    assert surface.reason is not None and "not reachable" in surface.reason
    with pytest.raises(UpstreamUnavailable):
        await surface.load(LoadSpec("google/gemma-3-1b"), lambda _: None)
    assert time.monotonic() - started < 15


async def test_availability_is_cached_briefly(tmp_path: Path) -> None:
    server = start_emulator(tmp_path)
    try:
        cached = SdkSurface(settings(server.url), recheck_after=60)
        fresh = SdkSurface(settings(server.url), recheck_after=0)
        assert await cached.available() and await fresh.available()
    finally:
        server.stop()
    assert await cached.available()  # still within its TTL
    assert not await fresh.available()


async def test_upstream_killed_mid_load(tmp_path: Path) -> None:
    server = start_emulator(tmp_path, "--load-delay", "20")
    assert server.proc is not None
    surface = SdkSurface(settings(server.url))
    load = asyncio.create_task(surface.load(LoadSpec("google/gemma-3-1b"), lambda _: None))
    try:
        deadline = time.monotonic() + 15
        while not await asyncio.to_thread(received, server):
            assert time.monotonic() < deadline and not load.done()
            await asyncio.sleep(0.05)
        os.kill(server.proc.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable, match="lost while loading"):
            await asyncio.wait_for(load, 30)
        assert time.monotonic() - started < 15
    finally:
        load.cancel()
        server.stop()
    surface_after = SdkSurface(settings(server.url))
    assert not await surface_after.available()


async def test_a_load_slower_than_the_load_timeout(tmp_path: Path) -> None:
    server = start_emulator(tmp_path, "--load-delay", "5")
    try:
        surface = SdkSurface(settings(server.url, load_timeout=0.5))
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match=r"within 0\.5 s"):
            await surface.load(LoadSpec("google/gemma-3-1b"), lambda _: None)
        assert time.monotonic() - started < 5
    finally:
        server.stop()


async def test_loading_does_not_block_the_event_loop(emu: ServerProcess) -> None:
    surface = SdkSurface(settings(emu.url))
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        await surface.load(LoadSpec("google/gemma-3-1b"), lambda _: None)
    finally:
        ticker.cancel()
    assert len(gaps) > 5
    assert max(gaps) < 0.5


def test_translation_and_read_back() -> None:
    sdk, sent, refused = translate(
        {"gpu": {"ratio": "max", "layers": 3}, "kvCacheQuantK": "f16", "cpuThreads": 4}, "llm"
    )
    assert sdk == {"gpu": {"ratio": "max"}, "llamaKCacheQuantizationType": "f16"}
    assert sent == {"gpu.ratio": "max", "kvCacheQuantK": "f16"}
    assert set(refused) == {"gpu.layers", "cpuThreads"}
    applied, missing, effective = compare(
        {"gpu.ratio": "max", "kvCacheQuantK": "f16", "seed": 4},
        {"gpu": {"ratio": 1.0}, "llamaKCacheQuantizationType": "q8_0"},
    )
    assert applied == {"gpu.ratio": 1.0}
    assert missing["kvCacheQuantK"] == "LM Studio applied 'q8_0' instead"
    assert "does not report" in missing["seed"]
    assert effective == {"gpu.ratio": 1.0, "kvCacheQuantK": "q8_0"}


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            flat[key] = value
    return flat
