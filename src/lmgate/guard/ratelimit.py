"""Per-key limits: requests per minute, tokens per minute, and requests in flight.

Windows slide: a request is admitted when fewer than `rpm` requests were admitted in the last
60 seconds, not since the top of the minute. Admission is one synchronous step (check every
limit, then record), so on the single event loop it is exact however many requests race.

- rpm counts every proxied request of the key (model lists too);
- max_concurrent counts inference requests (the ones that occupy the GPU) from admission until
  the exchange finishes, stream included;
- tpm counts the tokens the upstream reported (`Exchange.tokens_in` + `tokens_out`) when an
  inference request finishes; a request is admitted while the last minute's total is under the
  limit, since its own cost is known only afterwards.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from lmgate.errors import TooManyRequests
from lmgate.exchange import Exchange
from lmgate.guard.auth import principal_of
from lmgate.guard.keys import Principal
from lmgate.guard.rate_headers import Headers, HeaderTap, rate_headers
from lmgate.hooks import ProxyRequest, ResponseTap

WINDOW_S = 60.0
_HELD = "lmgate.limits.held"
_METERED = "lmgate.limits.metered"


@dataclass(slots=True)
class _Usage:
    admitted: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_total: int = 0
    in_flight: int = 0

    def prune(self, now: float) -> None:
        horizon = now - WINDOW_S
        while self.admitted and self.admitted[0] <= horizon:
            self.admitted.popleft()
        while self.tokens and self.tokens[0][0] <= horizon:
            self.token_total -= self.tokens.popleft()[1]

    def tokens_free_at(self, limit: int) -> float:
        """When enough of the window's tokens expire to bring the total under `limit`."""
        total = self.token_total
        for stamp, count in self.tokens:
            total -= count
            if total < limit:
                return stamp + WINDOW_S
        return self.tokens[-1][0] + WINDOW_S if self.tokens else 0.0


def refusal(
    principal: Principal,
    now: float,
    *,
    inference: bool,
    admitted: int,
    oldest: float,
    tokens: int,
    tokens_free_at: Callable[[], float],
    in_flight: int,
) -> TooManyRequests | None:
    """The 429 for the first limit this request would break, from the window's figures."""
    name = principal.name
    if principal.rpm is not None and admitted >= principal.rpm:
        return TooManyRequests(
            f"key '{name}' is over its limit of {principal.rpm} requests per minute",
            retry_after=oldest + WINDOW_S - now,
        )
    if inference and principal.tpm is not None and tokens >= principal.tpm:
        return TooManyRequests(
            f"key '{name}' is over its limit of {principal.tpm} tokens per minute",
            retry_after=tokens_free_at() - now,
            code="token_rate_limit_exceeded",
        )
    limit = principal.max_concurrent
    if inference and limit is not None and in_flight >= limit:
        return TooManyRequests(
            f"key '{name}' already has {limit} requests in progress (its limit)",
            retry_after=1,
            code="concurrency_limit_exceeded",
        )
    return None


def window_headers(
    principal: Principal,
    now: float,
    *,
    admitted: int,
    oldest: float | None,
    tokens: int,
    oldest_tokens: float | None,
    tokens_free_at: Callable[[], float],
) -> Headers:
    """`x-ratelimit-*` from the window as this request leaves it (counted when admitted)."""
    if principal.rpm is None and principal.tpm is None:
        return []
    tpm = principal.tpm
    if tpm is not None and tokens >= tpm:
        tokens_reset = tokens_free_at() - now
    else:
        tokens_reset = oldest_tokens + WINDOW_S - now if oldest_tokens is not None else 0.0
    return rate_headers(
        principal,
        used_requests=admitted,
        requests_reset=oldest + WINDOW_S - now if oldest is not None else 0.0,
        used_tokens=tokens,
        tokens_reset=tokens_reset,
    )


def with_headers(error: TooManyRequests, headers: Headers) -> TooManyRequests:
    error.headers.update((k.decode(), v.decode()) for k, v in headers)
    return error


class RateLimiter:
    """A proxy hook (admission) and an exchange observer (release, token metering)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._usage: dict[str, _Usage] = {}

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        principal = principal_of(request.scope)
        if principal is not None and principal.limited:
            headers = self.admit(principal, ex, inference=request.kind is not None)
            if headers:
                return HeaderTap(headers)
        return None

    def admit(self, principal: Principal, ex: Exchange, *, inference: bool) -> Headers:
        """Check every limit, then record the request; raises TooManyRequests when over one.
        Returns the `x-ratelimit-*` headers for the answer (the 429 carries them too)."""
        now = self.clock()
        usage = self._usage.setdefault(principal.id, _Usage())
        usage.prune(now)
        tpm = principal.tpm

        def headers() -> Headers:
            return window_headers(
                principal,
                now,
                admitted=len(usage.admitted),
                oldest=usage.admitted[0] if usage.admitted else None,
                tokens=usage.token_total,
                oldest_tokens=usage.tokens[0][0] if usage.tokens else None,
                tokens_free_at=lambda: usage.tokens_free_at(tpm or 0),
            )

        over = refusal(
            principal,
            now,
            inference=inference,
            admitted=len(usage.admitted),
            oldest=usage.admitted[0] if usage.admitted else now,
            tokens=usage.token_total,
            tokens_free_at=lambda: usage.tokens_free_at(tpm or 0),
            in_flight=usage.in_flight,
        )
        if over is not None:
            raise with_headers(over, headers())
        limit = principal.max_concurrent
        if principal.rpm is not None:
            usage.admitted.append(now)
        if inference and limit is not None:
            usage.in_flight += 1
            ex.attributes[_HELD] = principal.id
        if inference and tpm is not None:
            ex.attributes[_METERED] = principal.id
        return headers()

    def record_tokens(self, key_id: str, tokens: int) -> None:
        if tokens <= 0:
            return
        usage = self._usage.setdefault(key_id, _Usage())
        usage.tokens.append((self.clock(), tokens))
        usage.token_total += tokens

    def in_flight(self, key_id: str) -> int:
        usage = self._usage.get(key_id)
        return usage.in_flight if usage is not None else 0

    def on_start(self, ex: Exchange) -> None:
        pass

    def on_finish(self, ex: Exchange) -> None:
        held = ex.attributes.pop(_HELD, None)
        if held is not None:
            self._usage[held].in_flight -= 1
        metered = ex.attributes.pop(_METERED, None)
        if metered is not None:
            self.record_tokens(metered, (ex.tokens_in or 0) + (ex.tokens_out or 0))
