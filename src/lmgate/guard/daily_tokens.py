"""A key's daily token budget: once the day's prompt and completion tokens reach it, the key's
inference requests get 429 until local midnight (in the key's time zone).

The day's count lives in SQLite (`key_daily_tokens`), so every worker of `serve --workers N`
reads and adds to the same number: one primary-key read before a request and one upsert after
it, and only for keys that have a budget; every other key never gets here. As with `tpm`, a
request is admitted while the count is under the budget, since its own cost is known only
afterwards, so the last request of a day may take the count past it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from lmgate.errors import TooManyRequests
from lmgate.exchange import Exchange
from lmgate.guard.auth import principal_of
from lmgate.hooks import ProxyRequest, ResponseTap
from lmgate.key_hours import local_day_start
from lmgate.store.db import Database

_COUNTED = "lmgate.daily_tokens"  # Exchange attribute: (key id, day) to add the tokens to
KEEP_DAYS = 8

_ADD = (
    "INSERT INTO key_daily_tokens (key_id, day, tokens) VALUES (?, ?, ?)"
    " ON CONFLICT (key_id, day) DO UPDATE SET tokens = tokens + excluded.tokens"
)


class DailyTokens:
    """A proxy hook (refuses over budget) and an observer (counts what was used)."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._pruned_day = ""

    def used(self, key_id: str, day: str) -> int:
        rows = self.db.query(
            "SELECT tokens FROM key_daily_tokens WHERE key_id=? AND day=?", (key_id, day)
        )
        return int(rows[0][0]) if rows else 0

    async def before_forward(self, ex: Exchange, request: ProxyRequest) -> ResponseTap | None:
        principal = principal_of(request.scope)
        if principal is None or principal.daily_tokens is None or request.kind is None:
            return None
        now = self.clock()
        zone = principal.zone
        start = local_day_start(now, zone)
        day = datetime.fromtimestamp(start + 43_200, zone).strftime("%Y-%m-%d")
        used = self.used(principal.id, day)
        if used >= principal.daily_tokens:
            reopens = local_day_start(start + 36 * 3600, zone)  # the next local midnight
            shown = (
                datetime.fromtimestamp(reopens, zone)
                if zone
                else datetime.fromtimestamp(reopens).astimezone()
            )
            raise TooManyRequests(
                f"key '{principal.name}' has used its daily budget of "
                f"{principal.daily_tokens} tokens ({used} today); it opens again at "
                f"{shown.strftime('%Y-%m-%d %H:%M %Z').strip()}",
                retry_after=max(1.0, reopens - now),
                code="daily_tokens_exceeded",
            )
        ex.attributes[_COUNTED] = (principal.id, day)
        return None

    def on_start(self, ex: Exchange) -> None:
        pass

    def on_finish(self, ex: Exchange) -> None:
        counted: Any = ex.attributes.pop(_COUNTED, None) if ex.attributes else None
        if counted is None:
            return
        tokens = (ex.tokens_in or 0) + (ex.tokens_out or 0)
        if tokens <= 0:
            return
        key_id, day = counted
        statements: list[tuple[str, tuple[Any, ...]]] = [(_ADD, (key_id, day, tokens))]
        if day != self._pruned_day:  # once a day per worker: old days go
            self._pruned_day = day
            cutoff = datetime.fromtimestamp(self.clock() - KEEP_DAYS * 86400).strftime("%Y-%m-%d")
            statements.append(("DELETE FROM key_daily_tokens WHERE day < ?", (cutoff,)))
        self.db.transaction(statements)
