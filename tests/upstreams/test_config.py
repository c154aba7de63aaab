"""Several upstreams from each source: flags, `LMGATE_UPSTREAMS`, `[[upstreams]]` tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from lmgate.cli.serve import upstream_flags
from lmgate.settings import Settings
from lmgate.upstreams.config import UpstreamConfig, split_named
from lmgate.workers.handoff import Handoff


def test_zero_config_is_one_upstream_named_upstream() -> None:
    settings = Settings(
        upstream="http://10.0.0.5:1234/v1", upstream_token="t0", max_loaded_models=2
    )
    (only,) = settings.upstream_configs()
    assert only.name == "upstream" and only.url == "http://10.0.0.5:1234"
    assert only.token is not None and only.token.get_secret_value() == "t0"
    assert only.max_loaded_models == 2


def test_env_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMGATE_UPSTREAMS", "gpu=10.0.0.5:1234, mac=http://mac.lan:1234/v1")
    settings = Settings()
    assert [(u.name, u.url) for u in settings.upstreams] == [
        ("gpu", "http://10.0.0.5:1234"),
        ("mac", "http://mac.lan:1234"),
    ]
    assert settings.upstream_url == "http://10.0.0.5:1234"  # the primary


def test_toml_tables_camel_or_snake(tmp_path: Path) -> None:
    config = tmp_path / "lmgate.toml"
    config.write_text(
        """
[[upstreams]]
name = "gpu"
url = "http://10.0.0.5:1234"
token = "secret-gpu"
weight = 2
tags = ["fast"]
models = ["qwen*", "!qwen-huge*"]
maxLoadedModels = 3
memory_budget = "20GiB"
slots = 2
wake = "aa-bb-cc-dd-ee-ff"

[[upstreams]]
url = "http://10.0.0.6:8080"
"""
    )
    settings = Settings(config=config)
    gpu, second = settings.upstreams
    assert gpu.weight == 2 and gpu.tags == ["fast"] and gpu.max_loaded_models == 3
    assert gpu.memory_budget == 20 * 1024**3 and gpu.slots == 2 and gpu.wake == "aa:bb:cc:dd:ee:ff"
    assert settings.upstream_token is not None
    assert settings.upstream_token.get_secret_value() == "secret-gpu"
    assert second.name == "upstream-2" and second.token is None
    assert gpu.allows("qwen-small") and not gpu.allows("qwen-huge-70b")
    assert not gpu.allows("llama")
    assert "secret-gpu" not in str(gpu.public())


def test_repeated_flag() -> None:
    assert upstream_flags([]) == {}
    assert upstream_flags(["http://h:1234"]) == {"upstream": "http://h:1234"}
    flags = upstream_flags(["a=http://h:1", "http://k:2?x=1"])
    assert flags == {"upstreams": ["a=http://h:1", "http://k:2?x=1"]}
    assert split_named("http://k:2/?x=1") == (None, "http://k:2/?x=1")
    assert split_named("b=k:2") == ("b", "k:2")


@pytest.mark.parametrize(
    "value",
    [
        "a=http://h:1,a=http://k:2",  # a name twice
        "bad name=http://h:1",
        "a=ftp://h:1",
        "a=",
    ],
)
def test_bad_lists_are_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        Settings(upstreams=value)


def test_upstreams_reach_every_worker_with_their_tokens(tmp_path: Path) -> None:
    settings = Settings(
        upstreams=[{"name": "a", "url": "h:1", "token": "tok-a"}, {"name": "b", "url": "k:2"}]
    )
    back = Handoff.decode(Handoff(settings, tmp_path).encode()).settings
    assert back.upstreams == settings.upstreams
    first = back.upstreams[0]
    assert isinstance(first, UpstreamConfig) and first.token is not None
    assert first.token.get_secret_value() == "tok-a"
