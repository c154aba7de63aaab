"""Token usage in SQLite: per-minute rows written in batches, read back as filtered totals.

Rows are keyed by (minute, key name, model, endpoint), so a batch of any size becomes a few
upserts, and `since`/`until` filter at minute resolution. Days and hours are UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lmgate.store.db import Database

Statement = tuple[str, tuple[Any, ...]]

_UPSERT = (
    "INSERT INTO usage_minutes (minute, key_name, model, endpoint, requests, errors,"
    " unreported, tokens_in, tokens_out, tokens_out_estimated)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (minute, key_name, model, endpoint) DO UPDATE SET"
    " requests = requests + excluded.requests, errors = errors + excluded.errors,"
    " unreported = unreported + excluded.unreported,"
    " tokens_in = tokens_in + excluded.tokens_in, tokens_out = tokens_out + excluded.tokens_out,"
    " tokens_out_estimated = tokens_out_estimated + excluded.tokens_out_estimated"
)
GROUPS = {
    "day": "strftime('%Y-%m-%d', minute, 'unixepoch')",
    "hour": "strftime('%Y-%m-%dT%H:00Z', minute, 'unixepoch')",
    "key": "key_name",
    "model": "model",
    "endpoint": "endpoint",
}
_SUMS = (
    "SUM(requests) AS requests, SUM(errors) AS errors, SUM(unreported) AS unreported,"
    " SUM(tokens_in) AS tokens_in, SUM(tokens_out) AS tokens_out,"
    " SUM(tokens_out_estimated) AS tokens_out_estimated"
)


@dataclass(slots=True)
class UsageRow:
    minute: int
    key: str
    model: str
    endpoint: str
    requests: int = 0
    errors: int = 0
    unreported: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_out_estimated: int = 0  # part of tokens_out counted from relayed frames


def upserts(rows: Iterable[UsageRow]) -> list[Statement]:
    return [
        (
            _UPSERT,
            (
                r.minute,
                r.key,
                r.model,
                r.endpoint,
                r.requests,
                r.errors,
                r.unreported,
                r.tokens_in,
                r.tokens_out,
                r.tokens_out_estimated,
            ),
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class UsageQuery:
    key: str | None = None
    model: str | None = None
    since: float | None = None  # unix seconds, inclusive
    until: float | None = None  # unix seconds, exclusive
    group_by: tuple[str, ...] = ()


def _figures(row: Any) -> dict[str, int]:
    tokens_in, tokens_out = int(row["tokens_in"] or 0), int(row["tokens_out"] or 0)
    return {
        "requests": int(row["requests"] or 0),
        "errors": int(row["errors"] or 0),
        "unreported": int(row["unreported"] or 0),
        "tokensIn": tokens_in,
        "tokensOut": tokens_out,
        "tokensOutEstimated": int(row["tokens_out_estimated"] or 0),
        "totalTokens": tokens_in + tokens_out,
    }


def totals(db: Database, q: UsageQuery) -> dict[str, Any]:
    """Totals matching the filters, overall and per group (blocking: run it in a thread)."""
    where: list[str] = []
    params: list[Any] = []
    if q.key is not None:
        where.append("key_name = ?")
        params.append(q.key)
    if q.model is not None:
        where.append("model = ?")
        params.append(q.model)
    if q.since is not None:
        where.append("minute >= ?")
        params.append(int(q.since) - int(q.since) % 60)
    if q.until is not None:
        where.append("minute < ?")
        params.append(q.until)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    args = tuple(params)
    overall = db.query(f"SELECT {_SUMS} FROM usage_minutes{clause}", args)[0]
    groups: list[dict[str, Any]] = []
    if q.group_by:
        columns = ", ".join(f"{GROUPS[g]} AS g{i}" for i, g in enumerate(q.group_by))
        order = ", ".join(f"g{i}" for i in range(len(q.group_by)))
        sql = f"SELECT {columns}, {_SUMS} FROM usage_minutes{clause}"
        sql += f" GROUP BY {order} ORDER BY {order}"
        for row in db.query(sql, args):
            group: dict[str, Any] = {
                name: (row[f"g{i}"] or None) for i, name in enumerate(q.group_by)
            }
            groups.append(group | _figures(row))
    return {"totals": _figures(overall), "groups": groups}
