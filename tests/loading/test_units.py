"""The pieces of loading on their own: the choice, the layer conversion, tool output."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from lmgate.loading.choose import Chooser
from lmgate.loading.errors import SurfaceUnavailable
from lmgate.loading.fields import fields_of, flatten, nest
from lmgate.loading.layers import convert, layer_count
from lmgate.loading.lms import LmsSurface, target_args
from lmgate.loading.process import OUTPUT_LIMIT, TimedOut, run
from lmgate.loading.secrets import summarize
from lmgate.loading.surface import LoadSpec, Progress, SurfaceLoad
from tests.loading.conftest import make_fake_lms


class Standing:
    """A surface that only says what it can set and whether it is up (choice is all that is
    tested with it; real surfaces load in test_load_surfaces.py)."""

    def __init__(self, name: str, up: bool = True) -> None:
        self.name = name
        self.up = up

    def fields(self) -> frozenset[str]:
        return fields_of(self.name)

    async def available(self) -> bool:
        return self.up

    async def load(self, spec: LoadSpec, progress: Progress) -> SurfaceLoad:
        raise AssertionError("not used")

    async def unload(self, instance_id: str) -> None:
        raise AssertionError("not used")


def _choose(surfaces: list[Standing], wanted: set[str], forced: str | None = None) -> str:
    choice = asyncio.run(Chooser(surfaces).choose(wanted, forced))
    return choice.surface.name


def test_the_best_surface_that_applies_everything_else_the_most() -> None:
    all3 = [Standing("rest"), Standing("lms"), Standing("sdk")]
    assert _choose(all3, {"contextLength"}) == "sdk"
    assert _choose(all3, {"ropeFrequencyBase", "gpu.ratio"}) == "sdk"
    two = [Standing("rest"), Standing("lms"), Standing("sdk", up=False)]
    assert _choose(two, {"contextLength"}) == "lms"
    assert _choose(two, {"contextLength", "flashAttention"}) == "rest"
    assert _choose(two, {"gpu.ratio", "identifier", "evalBatchSize"}) == "lms"
    assert _choose(two, {"evalBatchSize", "flashAttention", "gpu.ratio"}) == "rest"
    assert _choose(two, {"gpu.ratio", "evalBatchSize"}) == "lms"  # a tie: the better one
    assert _choose(two, {"seed"}) == "lms"  # nobody here can: the better one, reporting it
    assert _choose(two, {"gpu.ratio"}, forced="rest") == "rest"
    with pytest.raises(SurfaceUnavailable):
        _choose(two, {"gpu.ratio"}, forced="sdk")
    with pytest.raises(SurfaceUnavailable):
        _choose([Standing("rest", up=False)], set())


def test_gpu_layers_become_a_ratio_only_with_a_layer_count() -> None:
    config = {"contextLength": 4096, "gpu": {"layers": 12}}
    done = convert(config, 48, "layer count from /api/v1/models")
    assert done.config == {"contextLength": 4096, "gpu": {"ratio": 0.25}}
    assert "12 of 48 layers, layer count from /api/v1/models" in done.applied_as["gpu.layers"]
    unknown = convert(config, None, "")
    assert unknown.config == {"contextLength": 4096}
    assert "layer count" in unknown.not_applied["gpu.layers"]
    both = convert({"gpu": {"layers": 12, "ratio": 0.5}}, 48, "")
    assert both.config == {"gpu": {"ratio": 0.5}} and "gpu.layers" in both.not_applied
    assert convert({"gpu": {"layers": 99}}, 48, "").config == {"gpu": {"ratio": 1.0}}
    assert layer_count({"block_count": 32}) == 32
    assert layer_count({"num_layers": True}) is None and layer_count(None) is None


def test_flat_and_nested_names() -> None:
    config = {"gpu": {"ratio": 0.5, "mainGpu": 1}, "seed": 3, "ttl": None}
    assert flatten(config) == {"gpu.ratio": 0.5, "gpu.mainGpu": 1, "seed": 3}
    assert nest(flatten(config)) == {"gpu": {"ratio": 0.5, "mainGpu": 1}, "seed": 3}


def test_lms_is_pointed_at_the_upstream() -> None:
    assert target_args("http://127.0.0.1:1234") == ["--port", "1234"]
    assert target_args("http://localhost:5000") == ["--port", "5000"]
    assert target_args("http://10.0.0.5:1234") == ["--host", "10.0.0.5", "--port", "1234"]
    assert target_args("http://gpu-box") == ["--host", "gpu-box", "--port", "80"]
    assert target_args("https://gpu-box:443") is None
    assert target_args("http://[fd00::5]:1234") is None


def test_tool_output_is_summarized_without_secrets() -> None:
    noisy = (
        "\x1b[32mLoading\x1b[0m 10%\r\x1b[32mLoading\x1b[0m 50%\n"
        "Error: failed to connect with Authorization: Bearer sk-abcdef1234567890abcd\n"
        "Error: token=hunter2hunter2 at http://user:pw@10.0.0.5:1234/x\n"
        "Error: my-own-secret-value was refused\n" + "padding line\n" * 500
    )
    said = summarize(noisy, ("my-own-secret-value",))
    assert "\x1b" not in said and "\n" not in said and len(said) <= 300
    for secret in ("sk-abcdef1234567890abcd", "hunter2hunter2", "user:pw", "my-own-secret-value"):
        assert secret not in said
    assert "failed to connect" in said and "was refused" in said


def test_a_tool_is_bounded_in_output_and_time() -> None:
    flood = "import sys\nfor _ in range(2000): sys.stdout.write('x' * 4096)\n"
    ran = asyncio.run(run([sys.executable, "-c", flood], limit_s=60))
    assert ran.code == 0 and len(ran.stdout) == OUTPUT_LIMIT
    seen: list[str] = []
    sleeper = "import time, sys\nprint('50%', flush=True)\ntime.sleep(60)\n"
    with pytest.raises(TimedOut):
        asyncio.run(run([sys.executable, "-c", sleeper], limit_s=1.5, on_text=seen.append))
    assert "50%" in "".join(seen)
    with pytest.raises(OSError):
        asyncio.run(run(["/nonexistent/lms", "version"], limit_s=5))


def test_concurrent_lms_checks_share_one_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check running while another starts (a load beside the background check) must not
    see `lms` as missing half way through the first one."""
    fake = make_fake_lms(tmp_path / "lms")
    for name, value in fake.env().items():
        monkeypatch.setenv(name, value)

    async def is_lmstudio() -> bool:
        return True

    async def both() -> list[bool]:
        surface = LmsSurface(str(fake.path), "http://127.0.0.1:1234", is_lmstudio, load_timeout=30)
        return list(await asyncio.gather(*(surface.available() for _ in range(4))))

    assert asyncio.run(both()) == [True] * 4
    assert [argv for argv in fake.calls() if argv[:1] == ["version"]] == [["version"]]
