"""Upstream URLs as they may be shown: never with the credentials they can carry.

`http://user:pass@host:1234` is a valid upstream (aiohttp sends the pair as Basic auth), so the
URL itself is a secret's container. Whatever shows it — `/ready`, `/admin/upstream`, logs,
`lmgate doctor`, the start-up banner — shows `redact_url(url)`; free text that may quote a URL
(an exception's message) goes through `scrub_urls`.
"""

from __future__ import annotations

import re
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
