"""The canonical classification: every spelling LM Studio routes alike classifies alike."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmgate.classify import (
    ENDPOINTS,
    LISTINGS,
    MANAGEMENT,
    SHORTHAND,
    Route,
    classify,
    is_proxied,
    route_of,
)
from lmgate.guard.paths import normalise

KNOWN = [*ENDPOINTS, *LISTINGS, *MANAGEMENT]


def _spell(path: str, upper: list[bool], slash: bool) -> str:
    spelled = "".join(c.upper() if u else c for c, u in zip(path, upper, strict=False))
    return spelled + path[len(upper) :] + ("/" if slash else "")


@given(
    path=st.sampled_from(KNOWN + list(SHORTHAND)),
    upper=st.lists(st.booleans(), max_size=30),
    slash=st.booleans(),
)
def test_every_spelling_of_a_route_is_that_route(path: str, upper: list[bool], slash: bool) -> None:
    canonical = classify(path)
    assert classify(normalise(_spell(path, upper, slash))) is canonical


@pytest.mark.parametrize(
    ("spelled", "path", "kind"),
    [
        ("/v1/chat/completions/", "/v1/chat/completions", "chat"),
        ("/V1/Chat/Completions", "/v1/chat/completions", "chat"),
        ("/V1/CHAT/COMPLETIONS/", "/v1/chat/completions", "chat"),
        ("/Chat/Completions/", "/v1/chat/completions", "chat"),
        ("/API/V0/Completions", "/api/v0/completions", "completions"),
        ("/v1/Embeddings/", "/v1/embeddings", "embeddings"),
        ("/V1/MESSAGES", "/v1/messages", "messages"),
        ("/v1/Responses/", "/v1/responses", "responses"),
        ("/API/v1/CHAT/", "/api/v1/chat", "native_chat"),
    ],
)
def test_inference_routes(spelled: str, path: str, kind: str) -> None:
    route = classify(spelled)
    assert route.proxied and route.path == path
    assert route.kind("POST") == kind
    assert route.kind("GET") is None and route.kind("PUT") is None


@pytest.mark.parametrize(
    ("spelled", "path", "shape"),
    [
        ("/v1/MODELS/", "/v1/models", ("data", "id")),
        ("/Models", "/v1/models", ("data", "id")),
        ("/models/", "/v1/models", ("data", "id")),
        ("/API/V1/MODELS", "/api/v1/models", ("models", "key")),
        ("/api/v1/models/", "/api/v1/models", ("models", "key")),
        ("/Api/V0/Models/", "/api/v0/models", ("data", "id")),
    ],
)
def test_listings(spelled: str, path: str, shape: tuple[str, str]) -> None:
    assert classify(spelled) == Route(path, True, listing=shape)


@pytest.mark.parametrize(
    ("spelled", "path", "model"),
    [
        ("/v1/models/qwen/qwen3-4b", "/v1/models/qwen/qwen3-4b", "qwen/qwen3-4b"),
        ("/V1/MODELS/Google/Gemma-3-1B/", "/v1/models/Google/Gemma-3-1B", "Google/Gemma-3-1B"),
        ("/API/V0/Models/llama", "/api/v0/models/llama", "llama"),
        ("/api/v1/models/Some-Model", "/api/v1/models/Some-Model", "Some-Model"),
        ("/v1/models/load", "/v1/models/load", "load"),  # only REST v1 has model management
    ],
)
def test_model_paths_keep_the_ids_spelling(spelled: str, path: str, model: str) -> None:
    assert classify(spelled) == Route(path, True, model=model)


@pytest.mark.parametrize(
    ("spelled", "path"),
    [
        ("/api/v1/models/load", "/api/v1/models/load"),
        ("/API/V1/MODELS/LOAD/", "/api/v1/models/load"),
        ("/api/v1/models/Unload", "/api/v1/models/unload"),
        ("/api/v1/models/download/status/Job_1", "/api/v1/models/download/status/Job_1"),
        ("/API/V1/Models/Download/Status/Job_1", "/API/V1/Models/Download/Status/Job_1"),
    ],
)
def test_model_management_is_never_a_model(spelled: str, path: str) -> None:
    route = classify(spelled)
    assert route.proxied and route.model is None and route.path == path


@pytest.mark.parametrize(
    ("spelled", "proxied"),
    [
        ("/v1/audio/Speech/", True),  # unknown to lmgate: proxied, as spelled, not inference
        ("/V1/Whatever", True),
        ("/API/V1/other", True),
        ("/v1", True),
        ("/V1/", True),
        ("/Api/V0", True),
        ("/api/v1", False),
        ("/admin/keys", False),
        ("/Admin/Keys/", False),
        ("/health", False),
        ("/metrics/", False),
        ("/dashboard/app.js", False),
        ("/v1x/chat/completions", False),
        ("/", False),
    ],
)
def test_everything_else_keeps_its_spelling(spelled: str, proxied: bool) -> None:
    route = classify(spelled)
    assert route == Route(spelled, proxied)
    assert is_proxied(spelled) is proxied
    assert route.kind("POST") is None and route.listing is None and route.model is None


@given(st.text(alphabet="/abcdefmoplsuvhtACDEMOV0129-._", max_size=40))
def test_classification_is_idempotent(raw: str) -> None:
    path = normalise("/" + raw)
    route = classify(path)
    assert classify(route.path) == route
    assert (
        route.path.lower().rstrip("/") == path.lower().rstrip("/")
        or route.path in SHORTHAND.values()
    )


def test_the_common_spelling_is_one_lookup() -> None:
    """Canonical spellings hand back a route built once, not one built per request."""
    for path in KNOWN:
        assert classify(path) is classify(path)
    assert route_of({"path": "/v1/models"}) is classify("/v1/models")
    marked = Route("/x", True, endpoint="chat")
    assert route_of({"path": "/v1/models", "lmgate.route": marked}) is marked
