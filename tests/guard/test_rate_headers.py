"""`x-ratelimit-*` headers: OpenAI's names and duration format, from both limiters, and on
real answers (200s, streams and 429s) for keys with limits, never for keys without."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from lmgate.errors import TooManyRequests
from lmgate.guard.keys import Principal
from lmgate.guard.paths import Scope
from lmgate.guard.rate_headers import duration
from lmgate.guard.ratelimit import RateLimiter
from lmgate.guard.shared_limits import SharedRateLimiter
from tests.guard.test_ratelimit import Clock, _ex
from tests.security.tools import bearer, make_key
from tests.servers import API_KEY, ServerProcess

DURATION = re.compile(r"^(?:\d+h)?(?:\d+m)?(?:\d+(?:\.\d+)?(?:ms|s))$")
CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def _key(**limits: int) -> Principal:
    return Principal("key_h", "hdr", Scope.INFERENCE, **limits)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0201, "21ms"),
        (0.999, "999ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.25, "59.25s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (3725, "1h2m5s"),
        (-3, "0s"),
    ],
)
def test_durations_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text and DURATION.match(text)


@pytest.mark.parametrize("shared", [False, True])
def test_limiters_count_down_and_the_429_carries_them(tmp_path: Path, shared: bool) -> None:
    clock = Clock()
    limiter = SharedRateLimiter(tmp_path / "l.sqlite3", clock) if shared else RateLimiter(clock)
    key = _key(rpm=3, tpm=100)
    seen = []
    for step in (0, 10, 20):
        clock.now = 1000 + step
        seen.append(dict(limiter.admit(key, _ex(), inference=True)))
    assert [h[b"x-ratelimit-remaining-requests"] for h in seen] == [b"2", b"1", b"0"]
    assert {h[b"x-ratelimit-limit-requests"] for h in seen} == {b"3"}
    assert seen[0][b"x-ratelimit-reset-requests"] == b"1m0s"
    assert seen[2][b"x-ratelimit-reset-requests"] == b"40s"  # the first leaves at 1060
    assert seen[0][b"x-ratelimit-limit-tokens"] == b"100"
    assert seen[0][b"x-ratelimit-remaining-tokens"] == b"100"
    limiter.record_tokens(key.id, 120)
    clock.now = 1030
    with pytest.raises(TooManyRequests) as refused:
        limiter.admit(key, _ex(), inference=True)
    headers = refused.value.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] == "30s" == f"{headers['Retry-After']}s"
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert headers["x-ratelimit-reset-tokens"] == "50s"  # recorded at 1020, leave at 1080
    if isinstance(limiter, SharedRateLimiter):
        limiter.close()


def test_only_limited_kinds_get_headers() -> None:
    limiter = RateLimiter(Clock())
    assert limiter.admit(_key(max_concurrent=2), _ex(), inference=True) == []
    names = {k for k, _ in limiter.admit(_key(rpm=5), _ex(), inference=True)}
    assert names == {
        b"x-ratelimit-limit-requests",
        b"x-ratelimit-remaining-requests",
        b"x-ratelimit-reset-requests",
    }


def test_answers_carry_the_headers(gateway: ServerProcess) -> None:
    key = make_key(gateway, name="with-headers", rpm=4, tpm=100000)
    with httpx.Client(base_url=gateway.url, headers=bearer(key), timeout=30) as client:
        first = client.post("/v1/chat/completions", json=CHAT)
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == "4"
        assert first.headers["x-ratelimit-remaining-requests"] == "3"
        assert DURATION.match(first.headers["x-ratelimit-reset-requests"])
        assert first.headers["x-ratelimit-limit-tokens"] == "100000"
        assert int(first.headers["x-ratelimit-remaining-tokens"]) <= 100000
        assert DURATION.match(first.headers["x-ratelimit-reset-tokens"])
        with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as s:
            assert s.headers["x-ratelimit-remaining-requests"] == "2"
            s.read()
        assert client.get("/v1/models").headers["x-ratelimit-remaining-requests"] == "1"
        assert client.get("/v1/models").headers["x-ratelimit-remaining-requests"] == "0"
        refused = client.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 429
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert refused.headers["x-ratelimit-limit-requests"] == "4"
        reset = refused.headers["x-ratelimit-reset-requests"]
        assert DURATION.match(reset)
        assert int(refused.headers["retry-after"]) <= 60
    plain = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=bearer(API_KEY))
    assert plain.status_code == 200
    assert not any(k.startswith("x-ratelimit") for k in plain.headers)
