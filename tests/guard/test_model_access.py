"""Model patterns per key: refusals, and model listings cut down to the allowed entries."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from lmgate.errors import Forbidden, UpstreamError
from lmgate.exchange import Exchange
from lmgate.guard.keys import Principal
from lmgate.guard.model_access import ListingFilter, ModelAccess
from lmgate.guard.paths import Scope
from lmgate.hooks import ProxyRequest

KEY = Principal("key_1", "alice", Scope.INFERENCE, models=("qwen*", "nomic-*"))


def _request(method: str, path: str, kind: str | None, body: Any = None) -> ProxyRequest:
    scope = {"headers": [(b"accept-encoding", b"gzip")], "lmgate.principal": KEY}
    return ProxyRequest(scope, method, path, kind, body)


def _filter(listing: Any, shape: tuple[str, str], chunks: int = 3) -> Any:
    tap = ListingFilter(KEY, *shape)
    headers = tap.start(200, [(b"content-length", b"99"), (b"content-type", b"x")])
    assert headers == [(b"content-type", b"x")]
    raw = orjson.dumps(listing)
    step = max(1, len(raw) // chunks)
    out = b"".join(tap.feed(raw[i : i + step]) for i in range(0, len(raw), step))
    assert out == b""
    return orjson.loads(tap.end())


def test_openai_and_v0_listings() -> None:
    listing = {
        "object": "list",
        "data": [{"id": "qwen/qwen3-4b"}, {"id": "google/gemma-3-1b"}, {"id": "nomic-embed"}],
    }
    got = _filter(listing, ("data", "id"))
    assert [m["id"] for m in got["data"]] == ["qwen/qwen3-4b", "nomic-embed"]
    assert got["object"] == "list"


def test_native_v1_listing() -> None:
    got = _filter({"models": [{"key": "qwen3"}, {"key": "llama"}, {"nokey": 1}]}, ("models", "key"))
    assert got == {"models": [{"key": "qwen3"}]}


def test_errors_pass_and_garbage_fails_closed() -> None:
    tap = ListingFilter(KEY, "data", "id")
    tap.start(500, [])
    assert tap.feed(b'{"error":"x"}') == b'{"error":"x"}' and tap.end() == b""
    assert _filter(["not", "an", "object"], ("data", "id")) == {"data": []}
    compressed = ListingFilter(KEY, "data", "id")
    with pytest.raises(UpstreamError):
        compressed.start(200, [(b"content-encoding", b"gzip")])


async def test_hook_checks_bodies_and_paths() -> None:
    hook = ModelAccess()
    ex = Exchange("r", "POST", "/v1/chat/completions", None)
    ok = _request("POST", "/v1/chat/completions", "chat", {"model": "qwen/qwen3-4b"})
    assert await hook.before_forward(ex, ok) is None
    refusals = [
        _request("POST", "/v1/chat/completions", "chat", {"model": "google/gemma-3-1b"}),
        _request("POST", "/v1/chat/completions", "chat", {"messages": []}),
        _request("POST", "/v1/chat/completions", "chat", {"model": ["qwen"]}),
        _request("POST", "/v1/audio/speech", None),
        _request("GET", "/v1/models/google/gemma-3-1b", None),
        _request("GET", "/api/v0/models/llama", None),
    ]
    for request in refusals:
        with pytest.raises(Forbidden) as refused:
            await hook.before_forward(ex, request)
        assert refused.value.code == "model_not_allowed"
        assert "qwen*, nomic-*" in refused.value.message
    listing = _request("GET", "/v1/models", None)
    assert isinstance(await hook.before_forward(ex, listing), ListingFilter)
    assert listing.scope["headers"] == []  # no compression asked for: the list must be read
    assert await hook.before_forward(ex, _request("GET", "/v1/models/qwen/qwen3-4b", None)) is None


async def test_keys_without_patterns_are_untouched() -> None:
    request = ProxyRequest({"headers": []}, "POST", "/v1/audio/speech", None, None)
    assert await ModelAccess().before_forward(Exchange("r", "POST", "/", None), request) is None
