"""Path normalisation: every spelling of a protected path classifies as protected."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lmgate.classify import ENDPOINTS, LISTINGS, MANAGEMENT, SHORTHAND, classify
from lmgate.errors import BadRequest
from lmgate.guard.paths import Scope, normalise, required_scope


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/v1/models", "/v1/models"),
        ("//admin//state", "/admin/state"),
        ("/v1/../admin/state", "/admin/state"),
        ("/v1/./chat/completions", "/v1/chat/completions"),
        ("/../../admin", "/admin"),
        ("/%61dmin/state", "/admin/state"),
        ("/%2561dmin/state", "/admin/state"),
        ("/v1/%2e%2e/admin", "/admin"),
        ("/v1%2f..%2fadmin", "/admin"),
        ("/v1\\..\\admin", "/admin"),
        ("/api/v1/models/../models/load", "/api/v1/models/load"),
        ("/api/v0/models/qwen/qwen3-4b", "/api/v0/models/qwen/qwen3-4b"),
        ("/", "/"),
        ("/v1/models/", "/v1/models/"),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize("raw", ["/v1/mo\x00dels", "/admin%0d%0aX: y", "/%25252525252561"])
def test_bad_paths_are_rejected(raw: str) -> None:
    with pytest.raises(BadRequest):
        normalise(raw)


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/health", Scope.PUBLIC),
        ("/ready", Scope.SERVICE),
        ("/v1/chat/completions", Scope.INFERENCE),
        ("/api/v1/models", Scope.INFERENCE),
        ("/api/v1/models/load", Scope.ADMIN),
        ("/api/v1/models/unload", Scope.ADMIN),
        ("/api/v1/models/download/status/job_1", Scope.ADMIN),
        ("/admin", Scope.ADMIN),
        ("/admin/models/activate", Scope.ADMIN),
        ("/debug/stream", Scope.ADMIN),
        ("/metrics", Scope.METRICS),
        ("/metrics/", Scope.ADMIN),
        ("/metrics/x", Scope.ADMIN),
        ("/metricsx", Scope.INFERENCE),
        ("/administrator", Scope.INFERENCE),
    ],
)
def test_required_scope(path: str, scope: Scope) -> None:
    assert required_scope(path, health_public=True) is scope


def test_health_can_require_a_key() -> None:
    assert required_scope("/health", health_public=False) is Scope.SERVICE


_PROTECTED = ["/admin/state", "/api/v1/models/load", "/debug/stream", "/metrics"]
_noise = st.sampled_from(["", "/", "//", "/.", "/./", "/x/..", "/v1/..", "/%2e/", "/a/b/../.."])


def _encode(text: str, mask: list[bool]) -> str:
    return "".join(
        f"%{ord(ch):02X}" if flag and ch != "/" else ch
        for ch, flag in zip(text, mask, strict=False)
    )


@given(
    target=st.sampled_from(_PROTECTED),
    prefix=_noise,
    upper=st.lists(st.booleans(), min_size=30, max_size=30),
    encode=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_no_spelling_escapes_admin_scope(
    target: str, prefix: str, upper: list[bool], encode: list[bool]
) -> None:
    spelled = "".join(c.upper() if u else c for c, u in zip(target, upper, strict=False))
    raw = prefix + _encode(spelled, encode)
    if not raw.startswith("/"):
        raw = "/" + raw
    expected = Scope.METRICS if target == "/metrics" else Scope.ADMIN
    assert required_scope(normalise(raw).lower(), health_public=True) is expected


@given(st.text(max_size=60))
def test_normalise_never_climbs_or_crashes(raw: str) -> None:
    try:
        result = normalise("/" + raw)
    except BadRequest:
        return
    assert result.startswith("/")
    assert "/../" not in result + "/" and "//" not in result


@given(
    path=st.sampled_from([*ENDPOINTS, *LISTINGS, *MANAGEMENT, *SHORTHAND, "/v1/models/qwen"]),
    upper=st.lists(st.booleans(), min_size=30, max_size=30),
    slash=st.booleans(),
)
def test_the_scope_of_a_spelling_is_the_scope_of_its_route(
    path: str, upper: list[bool], slash: bool
) -> None:
    """The guard's scope (from the spelling) and the route the request is sent as agree."""
    spelled = "".join(c.upper() if u else c for c, u in zip(path, upper, strict=False))
    normalised = normalise(spelled + ("/" if slash else ""))
    sent = classify(normalised).path
    expected = required_scope(path, health_public=True)
    assert required_scope(normalised.lower(), health_public=True) is expected
    assert required_scope(sent.lower(), health_public=True) is expected
