"""Per-key limits with a fake clock: sliding rpm, concurrency released at finish, tpm."""

from __future__ import annotations

import pytest

from lmgate.errors import TooManyRequests
from lmgate.exchange import Exchange
from lmgate.guard.keys import Principal
from lmgate.guard.paths import Scope
from lmgate.guard.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ex() -> Exchange:
    return Exchange(request_id="r", method="POST", path="/v1/chat/completions", client=None)


def _key(**limits: int) -> Principal:
    return Principal("key_1", "alice", Scope.INFERENCE, **limits)  # type: ignore[arg-type]


def test_rpm_window_slides() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    key = _key(rpm=3)
    for step in (0, 20, 40):
        clock.now = 1000 + step
        limiter.admit(key, _ex(), inference=True)
    clock.now = 1059
    with pytest.raises(TooManyRequests) as refused:
        limiter.admit(key, _ex(), inference=True)
    assert refused.value.headers["Retry-After"] == "1"
    assert refused.value.status == 429 and refused.value.code == "rate_limit_exceeded"
    clock.now = 1060  # the first request is now 60 s old: one slot frees, not a whole minute
    limiter.admit(key, _ex(), inference=True)
    with pytest.raises(TooManyRequests) as again:
        limiter.admit(key, _ex(), inference=True)
    assert again.value.headers["Retry-After"] == "20"


def test_concurrency_is_held_until_finish() -> None:
    limiter = RateLimiter(Clock())
    key = _key(max_concurrent=2)
    first, second = _ex(), _ex()
    limiter.admit(key, first, inference=True)
    limiter.admit(key, second, inference=True)
    with pytest.raises(TooManyRequests) as refused:
        limiter.admit(key, _ex(), inference=True)
    assert refused.value.code == "concurrency_limit_exceeded"
    limiter.admit(key, _ex(), inference=False)  # a model list occupies no slot
    limiter.on_finish(first)
    limiter.on_finish(first)  # finishing twice releases once
    assert limiter.in_flight("key_1") == 1
    limiter.admit(key, _ex(), inference=True)
    assert limiter.in_flight("key_1") == 2


def test_refused_requests_do_not_count() -> None:
    limiter = RateLimiter(Clock())
    key = _key(rpm=2, max_concurrent=1)
    limiter.admit(key, _ex(), inference=True)
    with pytest.raises(TooManyRequests):
        limiter.admit(key, _ex(), inference=True)  # concurrency: not admitted, rpm untouched
    limiter.admit(key, _ex(), inference=False)
    with pytest.raises(TooManyRequests):
        limiter.admit(key, _ex(), inference=False)


def test_tpm_from_reported_usage() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    key = _key(tpm=100)
    ex = _ex()
    limiter.admit(key, ex, inference=True)
    ex.tokens_in, ex.tokens_out = 30, 50
    limiter.on_finish(ex)
    clock.now += 10
    second = _ex()
    limiter.admit(key, second, inference=True)  # 80 < 100: admitted
    second.tokens_in, second.tokens_out = 10, 15
    limiter.on_finish(second)
    clock.now += 10
    with pytest.raises(TooManyRequests) as refused:
        limiter.admit(key, _ex(), inference=True)
    assert refused.value.code == "token_rate_limit_exceeded"
    # the first request's 80 tokens leave the window 60 s after they were counted
    assert refused.value.headers["Retry-After"] == "40"
    limiter.admit(key, _ex(), inference=False)  # model lists are not metered
    clock.now += 40
    limiter.admit(key, _ex(), inference=True)


def test_unlimited_keys_are_not_tracked() -> None:
    limiter = RateLimiter(Clock())
    assert not Principal("env:admin", "admin", Scope.ADMIN).limited
    assert limiter.in_flight("env:admin") == 0
