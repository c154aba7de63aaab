"""`x-ratelimit-*` headers, as OpenAI's API sends them, for keys with `rpm` or `tpm` limits.

SDKs and client code read these to slow down before they hit the wall: the limit, what is
left of it in the current minute, and when more frees up. Windows slide (see
`lmgate.guard.ratelimit`), so `reset` is when the next unit frees up: the oldest request (or
tokens) of the last minute leaving it, or, once over a token limit, enough of them leaving
to bring the total back under it. Durations are written as OpenAI writes them: `20ms`,
`1.5s`, `6m0s`.
"""

from __future__ import annotations

import math

from lmgate.guard.keys import Principal

Headers = list[tuple[bytes, bytes]]


def duration(seconds: float) -> str:
    """`seconds` (rounded up to a millisecond) the way Go writes a duration: `0s`, `250ms`,
    `1.5s`, `1m0s`, `1h0m0s`."""
    millis = max(0, math.ceil(seconds * 1000 - 1e-6))
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def rate_headers(
    principal: Principal,
    *,
    used_requests: int,
    requests_reset: float,
    used_tokens: int,
    tokens_reset: float,
) -> Headers:
    """The headers for a key's limits, from the window's figures after this request counted:
    requests admitted in the last minute and seconds until one leaves it, likewise tokens."""
    headers: Headers = []
    if principal.rpm is not None:
        headers += [
            (b"x-ratelimit-limit-requests", str(principal.rpm).encode()),
            (
                b"x-ratelimit-remaining-requests",
                str(max(0, principal.rpm - used_requests)).encode(),
            ),
            (b"x-ratelimit-reset-requests", duration(requests_reset).encode()),
        ]
    if principal.tpm is not None:
        headers += [
            (b"x-ratelimit-limit-tokens", str(principal.tpm).encode()),
            (b"x-ratelimit-remaining-tokens", str(max(0, principal.tpm - used_tokens)).encode()),
            (b"x-ratelimit-reset-tokens", duration(tokens_reset).encode()),
        ]
    return headers


class HeaderTap:
    """Adds the headers to the upstream's answer; the body passes untouched."""

    __slots__ = ("headers",)

    def __init__(self, headers: Headers) -> None:
        self.headers = headers

    def start(self, status: int, headers: Headers) -> Headers:
        return [*headers, *self.headers]

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def end(self) -> bytes:
        return b""
