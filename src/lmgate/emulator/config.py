"""Emulator settings and the catalog of models it pretends to have downloaded.

Everything that differs between LM Studio builds or setups (API version, JIT, auth, timing)
is a field here, so tests can pin the behaviour they depend on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

ApiVersion = Literal["0.3", "0.4"]
ModelType = Literal["llm", "embedding"]


@dataclass(frozen=True)
class ModelSpec:
    """One downloaded model, with the metadata LM Studio's listings expose."""

    key: str
    type: ModelType
    max_context_length: int
    publisher: str = ""
    display_name: str = ""
    architecture: str = "llama"
    quantization: str = "Q4_K_M"
    bits_per_weight: float = 4.0
    size_bytes: int = 1_000_000_000
    params_string: str | None = None
    format: Literal["gguf", "mlx"] = "gguf"
    vision: bool = False
    trained_for_tool_use: bool = False
    parallel: int = 4  # answers at once per instance (LLMs), reported in the load config

    def __post_init__(self) -> None:
        if self.type not in ("llm", "embedding"):
            raise ValueError(f"model {self.key!r}: type must be 'llm' or 'embedding'")
        if self.max_context_length < 1:
            raise ValueError(f"model {self.key!r}: max_context_length must be positive")
        if not self.publisher:
            owner = self.key.split("/", 1)[0] if "/" in self.key else "lmstudio-community"
            object.__setattr__(self, "publisher", owner)
        if not self.display_name:
            object.__setattr__(self, "display_name", self.key.rsplit("/", 1)[-1])

    @property
    def variant(self) -> str:
        """The `key@quant` spelling LM Studio uses for a specific download."""
        return f"{self.key}@{self.quantization.lower()}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model field(s): {', '.join(unknown)}")
        for required in ("key", "type", "max_context_length"):
            if required not in data:
                raise ValueError(f"model entry is missing {required!r}")
        return cls(**dict(data))


DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        key="qwen/qwen3-4b",
        type="llm",
        max_context_length=32768,
        display_name="Qwen3 4B",
        architecture="qwen3",
        bits_per_weight=4.5,
        size_bytes=2_497_280_256,
        params_string="4B",
        trained_for_tool_use=True,
    ),
    ModelSpec(
        key="google/gemma-3-1b",
        type="llm",
        max_context_length=32768,
        display_name="Gemma 3 1B",
        architecture="gemma3",
        bits_per_weight=4.5,
        size_bytes=720_425_472,
        params_string="1B",
    ),
    ModelSpec(
        key="text-embedding-nomic-embed-text-v1.5",
        type="embedding",
        max_context_length=2048,
        publisher="nomic-ai",
        display_name="Nomic Embed Text v1.5",
        architecture="nomic-bert",
        size_bytes=84_106_336,
    ),
)


@dataclass
class EmulatorConfig:
    """How the emulated LM Studio behaves. Defaults mimic a stock 0.4 install."""

    host: str = "127.0.0.1"
    port: int = 1234
    version: ApiVersion = "0.4"
    token_delay: float = 0.01
    api_token: str | None = None
    unknown_status: int = 200
    jit: bool = True
    preload: bool = True
    load_delay: float = 0.05
    models: tuple[ModelSpec, ...] = field(default=DEFAULT_MODELS)
    auto_evict: bool = True
    sdk: bool = True  # the SDK's websocket API; off: an upstream only reachable over HTTP
    default_context_length: int = 4096
    request_log_size: int = 200
    download_speed: float = 500_000_000.0  # bytes/s of a faked model download
    download_size: int = 1_000_000_000  # bytes of every faked download
    # Not LM Studio at all: a plain OpenAI-compatible server (`/v1/*` only, no greeting)
    openai_only: bool = False

    @property
    def has_v1_api(self) -> bool:
        """REST v1, API tokens and `/v1/messages` exist from 0.4 on."""
        return self.version == "0.4"


def load_models_file(path: Path) -> tuple[ModelSpec, ...]:
    """Read a catalog: a JSON list of model entries, or an object with a `models` list."""
    raw = orjson.loads(path.read_bytes())
    entries = raw.get("models") if isinstance(raw, dict) else raw
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a non-empty list of models")
    specs = tuple(ModelSpec.from_dict(entry) for entry in entries)
    keys = [spec.key for spec in specs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: duplicate model keys")
    return specs
