"""Request smuggling and header tricks against the real server (uvicorn + httptools + guard)."""

from __future__ import annotations

import socket
import time

import pytest

from tests.security.tools import raw, statuses
from tests.servers import ADMIN_KEY, API_KEY, ServerProcess

CHAT = b'{"model":"qwen/qwen3-4b","messages":[{"role":"user","content":"hi"}],"max_tokens":3}'


def _head(method: str, path: str, *lines: str) -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{h}\r\n" for h in lines) + "\r\n"
    ).encode("latin-1")


def test_two_different_keys_are_refused(target: ServerProcess) -> None:
    for second in (
        f"Authorization: Bearer {ADMIN_KEY}",
        f"X-API-Key: {ADMIN_KEY}",
        "Authorization: Bearer x",
    ):
        answer = raw(
            target,
            _head(
                "GET",
                "/admin/keys",
                f"Authorization: Bearer {API_KEY}",
                second,
                "Connection: close",
            ),
        )
        assert statuses(answer) == [401], second
        assert b"conflicting_api_keys" in answer


def test_the_same_key_twice_is_one_key(target: ServerProcess) -> None:
    answer = raw(
        target,
        _head(
            "GET",
            "/v1/models",
            f"Authorization: Bearer {API_KEY}",
            f"x-api-key: {API_KEY}",
            "Connection: close",
        ),
    )
    assert statuses(answer) == [200]


SMUGGLED = _head("GET", "/admin/keys", f"Authorization: Bearer {API_KEY}", "Connection: close")


@pytest.mark.parametrize(
    "framing",
    [
        ["Content-Length: 4", "Transfer-Encoding: chunked"],
        ["Transfer-Encoding: chunked", "Content-Length: 4"],
        ["Content-Length: 4", "Content-Length: 40"],
        ["Content-Length: 4, 40"],
        ["Content-Length: -1"],
        ["Content-Length: 0x10"],
        ["Transfer-Encoding: chunked", "Transfer-Encoding: identity"],
        ["Transfer-Encoding: identity, chunked, identity"],
        ["Transfer-Encoding: xchunked"],
        ["Transfer-Encoding : chunked"],
        ["Transfer-Encoding:\tchunked\r\n x"],
    ],
)
def test_ambiguous_framing_is_rejected(target: ServerProcess, framing: list[str]) -> None:
    body = b"0\r\n\r\n" + SMUGGLED
    answer = raw(
        target,
        _head("POST", "/v1/chat/completions", f"Authorization: Bearer {API_KEY}", *framing) + body,
    )
    found = statuses(answer)
    assert found and found[0] in (400, 501), found
    assert 200 not in found and b'"keys"' not in answer


@pytest.mark.parametrize(
    "header",
    [
        "X-A: a\rX-B: b",
        "X-A: a\nAuthorization: Bearer " + API_KEY,
        "X-A: a\x00b",
        "Author ization: Bearer " + API_KEY,
        "Authorization : Bearer " + API_KEY,
        "X-A\x7f: b",
        ": empty-name",
    ],
)
def test_malformed_headers_are_rejected(target: ServerProcess, header: str) -> None:
    answer = raw(target, _head("GET", "/admin/keys", header, "Connection: close"))
    assert statuses(answer) in ([400], [401]), answer[:200]


def test_bad_chunk_sizes(target: ServerProcess) -> None:
    for body in (
        b"zz\r\nab\r\n0\r\n\r\n",
        b"ffffffffffffffffffff\r\n",
        b"3\r\nabcdef\r\n0\r\n\r\n",
    ):
        head = _head(
            "POST",
            "/v1/chat/completions",
            f"Authorization: Bearer {API_KEY}",
            "Transfer-Encoding: chunked",
        )
        assert statuses(raw(target, head + body)) in ([400], [413]), body


def test_pipelined_admin_request_is_still_checked(target: ServerProcess) -> None:
    first = _head("GET", "/v1/models", f"Authorization: Bearer {API_KEY}")
    second = _head("GET", "/%61dmin/keys", f"Authorization: Bearer {API_KEY}")
    third = _head("GET", "/admin/keys", "Connection: close")
    assert statuses(raw(target, first + second + third)) == [200, 403, 401]


def test_oversized_head_is_431_and_closed(target: ServerProcess) -> None:
    big = "X-Pad: " + "a" * 9000
    answer = raw(target, _head("GET", "/v1/models", f"Authorization: Bearer {API_KEY}", big))
    assert statuses(answer) == [431] and b"request_headers_too_large" in answer
    many = [f"X-H{i}: {'v' * 20}" for i in range(400)]
    assert statuses(raw(target, _head("GET", "/health", *many))) == [431]
    long_url = "/v1/models?" + "q" * 9000
    assert statuses(raw(target, _head("GET", long_url, "Connection: close"))) == [431]


def test_head_just_under_the_limit_passes(target: ServerProcess) -> None:
    pad = "X-Pad: " + "a" * 7000
    answer = raw(
        target,
        _head("GET", "/v1/models", f"Authorization: Bearer {API_KEY}", pad, "Connection: close"),
    )
    assert statuses(answer) == [200]


def test_slowloris_head_times_out(target: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", target.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = sock.recv(4096)
        assert statuses(answer) == [408] and time.monotonic() - started < 3
        assert sock.recv(4096) == b""  # and closed


def test_silent_connection_is_closed(target: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", target.port), timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(4096) == b""
        assert 0.5 < time.monotonic() - started < 3


def test_slow_body_times_out(target: ServerProcess) -> None:
    head = _head(
        "POST",
        "/v1/chat/completions",
        f"Authorization: Bearer {API_KEY}",
        f"Content-Length: {len(CHAT)}",
    )
    with socket.create_connection(("127.0.0.1", target.port), timeout=5) as sock:
        sock.sendall(head + CHAT[:10])
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(4096):  # the connection is closed after the answer
            answer += chunk
        assert statuses(answer) == [408] and b"request_timeout" in answer
        assert time.monotonic() - started < 3


def test_oversized_bodies_are_413(target: ServerProcess) -> None:
    key = f"Authorization: Bearer {API_KEY}"
    declared = _head(
        "POST", "/v1/chat/completions", key, "Content-Length: 70000", "Connection: close"
    )
    assert statuses(raw(target, declared)) == [413]
    chunk = b"%x\r\n%s\r\n" % (40000, b"a" * 40000)
    chunked = _head(
        "POST", "/v1/chat/completions", key, "Transfer-Encoding: chunked", "Connection: close"
    )
    assert statuses(raw(target, chunked + chunk + chunk + b"0\r\n\r\n")) == [413]
    admin = _head(
        "POST",
        "/admin/models/activate",
        f"Authorization: Bearer {ADMIN_KEY}",
        "Content-Length: 70000",
        "Connection: close",
    )
    assert statuses(raw(target, admin)) == [413]


def _nested(depth: int) -> bytes:
    return b'{"model":"qwen/qwen3-4b","messages":' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(("depth", "code"), [(31, None), (40, b"json_too_deep"), (5000, b"")])
def test_deep_json(target: ServerProcess, depth: int, code: bytes | None) -> None:
    body = _nested(depth)
    head = _head(
        "POST",
        "/v1/chat/completions",
        f"Authorization: Bearer {API_KEY}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    )
    answer = raw(target, head + body)
    if code is None:
        assert statuses(answer)[0] != 400 or b"json_too_deep" not in answer
    else:
        assert statuses(answer) == [400] and code in answer


def test_deep_json_on_the_control_plane_is_400_not_500(target: ServerProcess) -> None:
    body = b'{"modelKey":"x","defaultInference":' + b"[" * 3000 + b"]" * 3000 + b"}"
    head = _head(
        "POST",
        "/admin/models/activate",
        f"Authorization: Bearer {ADMIN_KEY}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    )
    assert statuses(raw(target, head + body)) == [400]
