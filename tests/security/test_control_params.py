"""Every admin and debug query parameter is checked: a bad value is an OpenAI-style 400 that
names it, never a plain-text 500. Methods lmgate does not serve (TRACE, CONNECT, WebDAV's...)
are a 405 with `Allow` and never reach the upstream."""

from __future__ import annotations

import httpx
import pytest

from tests.security.tools import bearer, raw, statuses
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess

BAD_TIMES = [
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e400",
    "-1",
    "-0.5",
    "1e12",
    "99999999999999999999999999",
    "abc",
    "2026-13-45",
    "0001-01-01",
    "1" * 200,
    " ",  # blank is "not given", checked below as accepted
]


def bad_request(resp: httpx.Response, param: str) -> None:
    assert resp.status_code == 400, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    assert error["message"] and error["code"]


@pytest.mark.parametrize("value", BAD_TIMES)
@pytest.mark.parametrize("param", ["since", "until"])
def test_usage_times(admin: httpx.Client, param: str, value: str) -> None:
    resp = admin.get("/admin/usage", params={param: value})
    if not value.strip():
        assert resp.status_code == 200
        return
    bad_request(resp, param)


@pytest.mark.parametrize("value", ["1700000000", "1700000000.5", "2026-11-01", "2026-11-01T10:00Z"])
def test_usage_times_that_are_fine(admin: httpx.Client, value: str) -> None:
    resp = admin.get("/admin/usage", params={"since": value, "until": "9999-12-31"})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize(
    ("path", "param", "value"),
    [
        ("/admin/usage", "key", "k" * 5000),
        ("/admin/usage", "model", "m" * 5000),
        ("/admin/usage", "model", "bad\x00model"),
        ("/admin/usage", "key", "line\nbreak"),
        ("/admin/usage", "groupBy", "day,week"),
        ("/admin/usage", "groupBy", "day," * 500),
        ("/debug/requests", "limit", "nan"),
        ("/debug/requests", "limit", "-1"),
        ("/debug/requests", "limit", "1e400"),
        ("/debug/requests", "limit", "99999999999999999999"),
        ("/debug/requests", "limit", "ten"),
        ("/admin/keys", "includeRevoked", "maybe"),
        ("/admin/upstream", "refresh", "2"),
        ("/debug/stream", "lastEventId", "²"),
        ("/debug/stream", "lastEventId", "9" * 5000),
        ("/debug/stream", "lastEventId", "-3"),
        ("/debug/stream", "types", "a," * 100),
        ("/debug/stream", "model", "m" * 5000),
    ],
)
def test_query_parameters(admin: httpx.Client, path: str, param: str, value: str) -> None:
    bad_request(admin.get(path, params={param: value}), param)


def test_headers_and_path_parameters(admin: httpx.Client) -> None:
    bad_request(admin.get("/debug/stream", headers={"Last-Event-ID": "1e9"}), "Last-Event-ID")
    bad_request(admin.get("/admin/models/" + "m" * 600 + "/profile"), "model_key")
    bad_request(admin.delete("/debug/requests/" + "r" * 300), "request_id")


def test_the_gateway_keeps_serving(admin: httpx.Client, gateway: ServerProcess) -> None:
    for value in ("nan", "inf", "1e400"):
        admin.get("/admin/usage", params={"since": value})
    assert admin.get("/admin/usage", params={"since": "2026-01-01"}).status_code == 200
    assert httpx.get(gateway.url + "/v1/models", headers=bearer(API_KEY)).status_code == 200


@pytest.mark.parametrize(
    "method", ["TRACE", "TRACK", "PROPFIND", "MKCOL", "PURGE", "LOCK", "SEARCH", "CONNECT"]
)
@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions", "/api/v1/models", "/x"])
def test_other_methods_are_refused_and_never_forwarded(
    gateway: ServerProcess, upstream: httpx.Client, method: str, path: str
) -> None:
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    answer = raw(gateway, request)
    head, _, body = answer.partition(b"\r\n\r\n")
    seen = upstream.get("/__emulator/requests").json()
    assert [r for r in seen if r["method"] == method] == []
    if method in ("TRACK", "CONNECT") and statuses(answer) == [400]:
        return  # the HTTP parser refuses these itself: they never reach lmgate's app
    assert statuses(answer) == [405], answer
    assert b"\r\nallow: " in head.lower() and b"TRACE" not in head.split(b"allow: ", 1)[-1]
    assert b'"code":"method_not_allowed"' in body


def test_trace_with_a_body_and_no_key(gateway: ServerProcess, upstream: httpx.Client) -> None:
    answer = raw(
        gateway,
        b"TRACE /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
        b"Connection: close\r\n\r\n{}",
    )
    assert statuses(answer)[0] in (401, 405)
    assert [r for r in upstream.get("/__emulator/requests").json() if r["method"] == "TRACE"] == []
