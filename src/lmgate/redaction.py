"""Upstream URLs as they may be shown: never with the credentials they can carry, and only to
whoever may know where the upstream is.

`http://user:pass@host:1234` is a valid upstream (aiohttp sends the pair as Basic auth), so the
URL itself is a secret's container. Whatever shows it — `/ready`, `/admin/upstream`, logs,
`lmgate doctor`, the start-up banner — shows `redact_url(url)`; free text that may quote a URL
(an exception's message) goes through `scrub_urls`. Error messages about the upstream name it
by its (redacted) URL for the operator (an admin key, or no keys at all) and as "the upstream"
for everyone else: `operator_view` is set per request, and work outside any request (the model
sync loop) gets the anonymous name.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from urllib.parse import urlsplit, urlunsplit

MARK = "***"
# scheme://userinfo@ — userinfo is everything up to the last '@' before the host part ends.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#@]*@")


def redact_url(url: str) -> str:
    """`url` with any `user:password@` replaced by `***@`; other parts unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return scrub_urls(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{MARK}@{host}"))


def scrub_urls(text: str) -> str:
    """Every URL in `text` with its userinfo replaced by `***`."""
    return _USERINFO.sub(rf"\1{MARK}@", text)


operator_view: ContextVar[bool] = ContextVar("lmgate_operator_view", default=False)


def upstream_named(shown_url: str) -> str:
    """How an error message about the upstream names it, for the request being served."""
    return f"upstream {shown_url}" if operator_view.get() else "the upstream"
