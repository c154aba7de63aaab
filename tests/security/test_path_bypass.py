"""Path spellings that try to reach admin routes or LM Studio's model management without the
admin scope, or anything but `/metrics` with the metrics scope. Every one must be refused (403),
rejected as malformed (400) or match nothing (404): never served."""

from __future__ import annotations

import pytest

from lmgate.guard.paths import normalise
from tests.security.tools import make_key, raw, statuses
from tests.servers import API_KEY, METRICS_KEY, ServerProcess

ADMIN_SPELLINGS = [
    "/admin/state",
    "/admin/keys",
    "//admin/keys",
    "/./admin/keys",
    "/admin/./keys",
    "/admin//keys",
    "/v1/../admin/keys",
    "/v1/models/../../admin/keys",
    "/../../../admin/keys",
    "/v1/%2e%2e/admin/keys",
    "/v1/%2E%2E/admin/keys",
    "/v1%2f..%2fadmin%2fkeys",
    "/v1%5c..%5cadmin%5ckeys",
    "/v1\\..\\admin\\keys",
    "/%61dmin/keys",
    "/%2561dmin/keys",
    "/%252561dmin/keys",
    "/ADMIN/KEYS",
    "/Admin/Keys",
    "/aDmIn/state",
    "/admin/keys/",
    "/admin/keys?x=/v1/models",
    "/debug/status",
    "/DEBUG/status",
    "/debug/../debug/status",
    "/metrics",
    "/metrics/",
    "/Metrics",
    "/%6detrics",
    "/admin/openapi.json",
]
MANAGEMENT_SPELLINGS = [
    "/api/v1/models/load",
    "/api/v1/models/unload",
    "/api/v1/models/download",
    "/api/v1/models/%6coad",
    "/api/v1/models/lo%61d",
    "/api/v1/models//load",
    "/api/v1/./models/load",
    "/api/v1/models/./load",
    "/API/V1/MODELS/LOAD",
    "/Api/v1/Models/Unload",
    "/v1/../api/v1/models/unload",
    "/api/v0/../v1/models/load",
    "/api/v1/models/x/../load",
    "/api/v1/models/load/",
    "/api%2fv1%2fmodels%2fload",
    "/api/v1/models/%2e/load",
    "/api/v1/models/load?model=x",
]
ODD_SPELLINGS = [
    "/admin;/keys",
    "/admin%3b/keys",
    "/admin%00/keys",
    "/admin%0d%0aX-Injected:%201/keys",
    "/admin%09/keys",
    "/%ef%bc%8fadmin/keys",
    "/admin%c0%afkeys",
    "/admin%2e/keys",
    "/%2e/admin/keys",
    "/admin%20/keys",
    "/%25%32%65%25%32%65/admin/keys",
    "/v1/models/%252e%252e/%252e%252e/admin/keys",
]
# With a metrics key: everything that starts out as, or ends up as, something but `/metrics`.
METRICS_ESCAPES = [
    "/metrics/",
    "/metrics/x",
    "/metrics/../admin/keys",
    "/metrics/..%2fadmin%2fkeys",
    "/metrics%2f..%2fadmin%2fkeys",
    "/metrics%5c..%5cadmin%5ckeys",
    "/metrics\\..\\admin\\keys",
    "/metrics/%2e%2e/debug/status",
    "/metrics/%252e%252e/debug/metrics",
    "/METRICS/../ADMIN/KEYS",
    "/metrics;/../admin/keys",
    "/metrics%00",
    "/metrics%3f/../admin/keys",
    "/metrics/../v1/models",
    "/metrics/../models",
    "/metrics/..%2f..%2fv1/models",
    "/metrics/../api/v1/models/load",
    "/%6detrics/%2e%2e/v1/chat/completions",
    "/v1/models?/metrics",
    "/v1/models/../../metrics/../v1/models",
    "/debug/../metrics/../debug/stream",
]
# Spellings that really are `/metrics`: served to a metrics key on GET, refused on anything else.
METRICS_SPELLINGS = ["/metrics", "//metrics", "/./metrics", "/v1/../metrics", "/%6detrics",
                     "/%256detrics", "/metrics?x=/admin/keys"]  # fmt: skip


def _send(server: ServerProcess, method: str, path: str, key: str) -> int:
    body = b"{}" if method == "POST" else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    found = statuses(raw(server, head.encode("latin-1") + body))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("path", ADMIN_SPELLINGS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_admin_spellings(target: ServerProcess, path: str, method: str) -> None:
    status = _send(target, method, path, API_KEY)
    assert status in (400, 403), f"{method} {path} answered {status}"


@pytest.mark.parametrize("path", MANAGEMENT_SPELLINGS)
def test_model_management_spellings(target: ServerProcess, path: str) -> None:
    status = _send(target, "POST", path, API_KEY)
    assert status in (400, 403), f"POST {path} answered {status}"


@pytest.mark.parametrize("path", ODD_SPELLINGS)
def test_odd_spellings_match_nothing(target: ServerProcess, path: str) -> None:
    status = _send(target, "GET", path, API_KEY)
    assert status in (400, 403, 404), f"GET {path} answered {status}"


def test_absolute_form_target(target: ServerProcess) -> None:
    for form in ("http://127.0.0.1/admin/keys", "http://evil/../admin/keys"):
        assert _send(target, "GET", form, API_KEY) in (400, 403)


@pytest.mark.parametrize("path", ["/admin/keys", "/%61dmin/keys", "/API/V1/MODELS/LOAD"])
def test_managed_inference_keys_are_held_to_the_same_rule(target: ServerProcess, path: str) -> None:
    key = make_key(target, name=f"paths-{abs(hash(path)) % 10**8}", scope="inference")
    assert _send(target, "POST", path, key) == 403


NOT_METRICS = [p for p in ADMIN_SPELLINGS + MANAGEMENT_SPELLINGS if normalise(p) != "/metrics"]


@pytest.mark.parametrize("path", METRICS_ESCAPES + NOT_METRICS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_metrics_key_reaches_only_metrics(target: ServerProcess, path: str, method: str) -> None:
    status = _send(target, method, path, METRICS_KEY)
    assert status in (400, 403, 404), f"{method} {path} answered {status}"


@pytest.mark.parametrize("path", METRICS_SPELLINGS)
def test_metrics_spellings_are_metrics(target: ServerProcess, path: str) -> None:
    assert _send(target, "GET", path, METRICS_KEY) == 200
    assert _send(target, "POST", path, METRICS_KEY) == 403
    assert _send(target, "GET", path, API_KEY) == 403


@pytest.mark.parametrize("path", ["/metrics/", "/metrics/../v1/models", "/%61dmin/keys"])
def test_managed_metrics_keys_are_held_to_the_same_rule(target: ServerProcess, path: str) -> None:
    key = make_key(target, name=f"mpaths-{abs(hash(path)) % 10**8}", scope="metrics")
    assert _send(target, "GET", path, key) == 403
    assert _send(target, "GET", "/metrics", key) == 200
