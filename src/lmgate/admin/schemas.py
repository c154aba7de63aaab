"""Validated request bodies of the admin API, camelCase on the wire as in the TypeScript edition."""

from __future__ import annotations

from typing import Any

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

    @field_validator("max_tokens")
    @classmethod
    def _max_tokens(cls, value: int | None) -> int | None:
        if value is not None and value != -1 and value < 1:
            raise ValueError("maxTokens must be a positive integer, or -1 for no limit")
        return value


class GpuConfig(Schema):
    ratio: float | None = Field(None, ge=0, le=1)
    layers: int | None = Field(None, ge=0, le=_MAX_INT)


class LoadConfig(Schema):
    context_length: int | None = Field(None, gt=0, le=_MAX_INT)
    gpu: GpuConfig | None = None
    cpu_threads: int | None = Field(None, gt=0, le=_MAX_INT)
    rope_frequency_base: float | None = Field(None, gt=0)
    rope_frequency_scale: float | None = Field(None, gt=0)
    flash_attention: bool | None = None
    eval_batch_size: int | None = Field(None, gt=0, le=_MAX_INT)
    num_experts: int | None = Field(None, gt=0, le=_MAX_INT)
    offload_kv_cache_to_gpu: bool | None = None
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


class UnloadRequest(Schema):
    """One target: a model's instances, one instance (`instanceId`, or the TypeScript
    edition's `identifier`), or all. With an instance, a `modelKey` may come along: the
    edition sent both; the instance is what is unloaded."""

    model_key: str | None = Field(None, min_length=1, max_length=512)
    instance_id: str | None = Field(None, min_length=1, max_length=512)
    identifier: str | None = Field(None, min_length=1, max_length=512)
    all: bool = False

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
