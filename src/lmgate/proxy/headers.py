"""Which headers cross the gateway, in each direction (RFC 9110 hop-by-hop rules)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Recomputed or replaced by the gateway on the way up.
_REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
_CREDENTIALS = frozenset({b"authorization", b"x-api-key"})
_RESPONSE_DROP = HOP_BY_HOP | {b"date", b"server"}


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Headers named in `Connection:` are hop-by-hop too."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def request_headers(
    headers: Sequence[tuple[bytes, bytes]],
    *,
    auth_header: tuple[str, str] | None,
    forward_credentials: bool,
) -> list[tuple[str, str]]:
    """Client headers for the upstream: no hop-by-hop, no gateway key, the upstream token added.

    The client's own credentials go up only when the gateway has no keys of its own and no
    upstream token is configured (then they were meant for the upstream, not for us).
    """
    drop = _REQUEST_DROP | _connection_tokens(headers)
    if auth_header is not None or not forward_credentials:
        drop = drop | _CREDENTIALS
    out = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k not in drop]
    if auth_header is not None:
        out.append(auth_header)
    return out


def response_headers(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    drop = _RESPONSE_DROP | _connection_tokens(headers)
    return [(k, v) for k, v in headers if k not in drop]
