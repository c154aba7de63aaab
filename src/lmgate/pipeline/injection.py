"""Model name and default sampling parameters, injected into requests that lack them.

Pure functions on an already parsed body. Defaults are compiled once per activation into
`(wire_name, value)` pairs per endpoint kind, so a request pays a dict lookup per field.
A field present in the request always wins, even an explicit `null`. Embeddings get the
embedding model (never the active chat model, which cannot serve them) or no model at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_OPENAI = {
    "temperature": "temperature",
    "maxTokens": "max_tokens",
    "topP": "top_p",
    "topK": "top_k",
    "repeatPenalty": "repeat_penalty",
    "stopStrings": "stop",
    "stream": "stream",
    # LM Studio sets CPU threads per prediction; its OpenAI-compatible server ignores keys
    # it does not take, so this is sent where a default can be honoured, never a refusal
    "cpuThreads": "cpu_threads",
}

# Gateway field (camelCase) -> the endpoint's wire name. Absent = not injectable there.
WIRE_NAMES: dict[str, dict[str, str]] = {
    "chat": _OPENAI,
    "completions": _OPENAI,
    "embeddings": {},
    "responses": {
        "temperature": "temperature",
        "maxTokens": "max_output_tokens",
        "topP": "top_p",
        "stream": "stream",
    },
    "messages": {
        "temperature": "temperature",
        "maxTokens": "max_tokens",
        "topP": "top_p",
        "topK": "top_k",
        "stopStrings": "stop_sequences",
        "stream": "stream",
    },
    "native_chat": {
        "temperature": "temperature",
        "maxTokens": "max_output_tokens",
        "topP": "top_p",
        "topK": "top_k",
        "repeatPenalty": "repeat_penalty",
        "stream": "stream",
    },
}

# Exchange.attributes: the fields lmgate filled in (wire name: value), shown in
# `inference_start` events and `/debug/requests` so an answer's cause can be traced.
INJECTED = "injected"

# `maxTokens: -1` means "no limit": only OpenAI-style endpoints accept -1 on the wire.
_UNLIMITED_OK = frozenset({"chat", "completions"})


Compiled = Mapping[str, tuple[tuple[str, Any], ...]]


@dataclass(frozen=True, slots=True)
class Injection:
    """What to add to requests: the active model, its defaults compiled per kind, and for
    models with a profile, the profile's defaults laid over the active ones."""

    model: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    embedding_model: str | None = None
    by_kind: Compiled = field(default_factory=dict)
    by_model: Mapping[str, Compiled] = field(default_factory=dict)


def compile_injection(
    model: str | None,
    defaults: Mapping[str, Any] | None,
    profiles: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    embedding_model: str | None = None,
) -> Injection:
    base = {k: v for k, v in (defaults or {}).items() if v is not None}
    by_model = {
        key: _compile({**base, **{k: v for k, v in own.items() if v is not None}})
        for key, own in (profiles or {}).items()
        if key != model
    }
    return Injection(
        model=model,
        defaults=base,
        by_kind=_compile(base),
        by_model=by_model,
        embedding_model=embedding_model,
    )


def _compile(defaults: Mapping[str, Any]) -> Compiled:
    by_kind: dict[str, tuple[tuple[str, Any], ...]] = {}
    for kind, names in WIRE_NAMES.items():
        pairs = []
        for gateway_name, value in defaults.items():
            wire = names.get(gateway_name)
            if wire is None:
                continue
            if gateway_name == "maxTokens" and value == -1 and kind not in _UNLIMITED_OK:
                continue
            pairs.append((wire, value))
        by_kind[kind] = tuple(pairs)
    return by_kind


def inject(
    body: dict[str, Any], kind: str, injection: Injection, added: dict[str, Any] | None = None
) -> bool:
    """Fill in what `body` lacks; return whether anything changed. `added`, when given,
    receives each field filled in (wire name: value), for events and the request list."""
    changed = False
    model = injection.embedding_model if kind == "embeddings" else injection.model
    if model is not None and "model" not in body:
        body["model"] = model
        changed = True
        if added is not None:
            added["model"] = model
    named = body.get("model")
    compiled = injection.by_kind
    if isinstance(named, str):
        compiled = injection.by_model.get(named, compiled)
    for wire, value in compiled.get(kind, ()):
        if wire not in body:
            body[wire] = list(value) if isinstance(value, list) else value
            changed = True
            if added is not None:
                added[wire] = value
    return changed
