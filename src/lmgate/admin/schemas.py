"""Validated request bodies of the admin API, camelCase on the wire as in the TypeScript edition."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

# Integers go to SQLite and to the upstream as JSON: keep them within 32 bits.
_MAX_INT = 2**31 - 1


class Schema(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        """The camelCase dict that is stored and injected; unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True)


class DefaultInference(Schema):
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, le=_MAX_INT)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, le=_MAX_INT)
    repeat_penalty: float | None = Field(None, gt=0)
    stop_strings: list[str] | None = None
    stream: bool | None = None
    # a prediction setting in LM Studio; a load's `cpuThreads` is stored here
    cpu_threads: int | None = Field(None, gt=0, le=1024)

    @field_validator("max_tokens")
    @classmethod
    def _max_tokens(cls, value: int | None) -> int | None:
        if value is not None and value != -1 and value < 1:
            raise ValueError("maxTokens must be a positive integer, or -1 for no limit")
        return value


class GpuConfig(Schema):
    ratio: float | Literal["max", "off"] | None = None
    layers: int | None = Field(None, ge=0, le=_MAX_INT)
    main_gpu: int | None = Field(None, ge=0, le=1024)
    split_strategy: Literal["evenly", "favorMainGpu"] | None = None
    disabled_gpus: list[int] | None = Field(None, max_length=1024)

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, float | int) and not 0 <= value <= 1:
            raise ValueError("gpu.ratio must be from 0 to 1, or 'max' or 'off'")
        return value


KvCacheQuant = Literal["f32", "f16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]


class LoadConfig(Schema):
    """Every load setting LM Studio has on some surface (reference §9.2); `lmgate.loading`
    picks the surface that applies them and reports the ones it could not."""

    context_length: int | None = Field(None, gt=0, le=_MAX_INT)
    gpu: GpuConfig | None = None
    cpu_threads: int | None = Field(None, gt=0, le=1024)
    rope_frequency_base: float | None = Field(None, gt=0)
    rope_frequency_scale: float | None = Field(None, gt=0)
    flash_attention: bool | None = None
    eval_batch_size: int | None = Field(None, gt=0, le=_MAX_INT)
    num_experts: int | None = Field(None, gt=0, le=_MAX_INT)
    offload_kv_cache_to_gpu: bool | None = None
    kv_cache_quant_k: KvCacheQuant | Literal[False] | None = None
    kv_cache_quant_v: KvCacheQuant | Literal[False] | None = None
    keep_model_in_memory: bool | None = None
    try_mmap: bool | None = None
    use_fp16_for_kv_cache: bool | None = Field(None, alias="useFp16ForKVCache")
    seed: int | None = Field(None, ge=-1, le=_MAX_INT)
    parallel: int | None = Field(None, gt=0, le=1024)
    ttl: int | None = Field(None, gt=0, le=_MAX_INT)


class ModelKey(Schema):
    model_key: str = Field(min_length=1, max_length=512)


class EditionFields(Schema):
    """The TypeScript edition's load fields: accepted, applied where the upstream can, and
    reported under `notApplied` otherwise (see `admin/edition.py`)."""

    instance_id: str | None = Field(None, min_length=1, max_length=512)
    identifier: str | None = Field(None, min_length=1, max_length=512)
    ttl_seconds: int | None = Field(None, gt=0, le=_MAX_INT)


class ActivateRequest(EditionFields, ModelKey):
    default_inference: DefaultInference | None = None
    force: bool = False  # activate even a model the upstream does not list
    # injected into embeddings requests without a model; null clears it, absent keeps it
    default_embedding_model: str | None = Field(None, min_length=1, max_length=512)


class LoadRequest(EditionFields, ModelKey):
    activate: bool | None = None  # None: only when no other model is active
    default_inference: DefaultInference | None = None
    load_config: LoadConfig | None = None
    new_instance: bool = False
    surface: Literal["sdk", "lms", "rest"] | None = None  # None: the best for the fields
    upstream: str | None = Field(None, max_length=63)  # None: chosen (several upstreams)


class UnloadRequest(Schema):
    """One target: a model's instances, one instance (`instanceId`, or the TypeScript
    edition's `identifier`), or all. With an instance, a `modelKey` may come along: the
    edition sent both; the instance is what is unloaded."""

    model_key: str | None = Field(None, min_length=1, max_length=512)
    instance_id: str | None = Field(None, min_length=1, max_length=512)
    identifier: str | None = Field(None, min_length=1, max_length=512)
    all: bool = False
    upstream: str | None = Field(None, max_length=63)  # None: where it is loaded

    @model_validator(mode="after")
    def _one_target(self) -> UnloadRequest:
        if self.instance_id is None and self.identifier is not None:
            self.instance_id = self.identifier
        elif self.identifier not in (None, self.instance_id):
            raise ValueError("instanceId and identifier name different instances")
        instance = self.instance_id is not None
        given = sum([self.model_key is not None and not instance, instance, self.all])
        if given != 1 or (self.all and self.model_key is not None):
            raise ValueError("give exactly one of modelKey, instanceId or all: true")
        return self


class ProfileRequest(Schema):
    """A model's profile. `PUT` replaces it (what is left out goes back to its default);
    `PATCH` changes what is sent (`slots: null` / `ttl: null` back to the default)."""

    load_config: LoadConfig | None = None
    default_inference: DefaultInference | None = None
    slots: int | None = Field(None, ge=1, le=1024, description="Answers at once.")
    ttl: float | None = Field(
        None, ge=0, le=_MAX_INT, allow_inf_nan=False, description="Idle seconds; 0 = never."
    )
    pinned: bool | None = Field(None, description="Never evicted nor unloaded for idleness.")

    def policy(self) -> dict[str, Any]:
        """The policy fields the request sent, for `StateStore.set_profile`."""
        names: tuple[str, ...] = ("slots", "ttl", "pinned")
        given: dict[str, Any] = {f: getattr(self, f) for f in names if f in self.model_fields_set}
        if "pinned" in given:
            given["pinned"] = bool(given["pinned"])
        return given
