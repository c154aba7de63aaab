"""What a web page the operator visits could make their browser do to lmgate: refused.

Two checks, made by the guard once a request is admitted (the body's content type is checked
by `json_problem` after the body is admitted, so an oversized one is a 413 first):

- **Cross-site requests** to admin routes (`/admin/*`, `/debug/*`, `/metrics`) and to LM Studio's
  model management (`/api/v1/models/load|unload|download`). Any page can make a browser send a
  form or `text/plain` POST anywhere without asking first, so a request the browser marks as
  coming from elsewhere is refused (403): `Sec-Fetch-Site` other than `same-origin` or `none`
  (typed in the address bar), or an `Origin` other than the gateway's own (`scheme://` + the
  request's `Host`). Origins allowed for CORS are not the gateway's own: they may use the models,
  not the control plane. A state-changing request (any method but GET, HEAD, OPTIONS) that
  declares a content type must declare `application/json` (415 otherwise): a page cannot send
  that type to another origin without a CORS preflight, which these routes refuse. curl, SDKs
  and the CLI send neither header, so they pass; `curl -d` must add `-H 'Content-Type:
  application/json'` (it would claim a form).
- **Host names without keys.** With auth off, a page on attacker.example can point its own name
  at 127.0.0.1 (DNS rebinding) and then call the gateway as a same-origin page would. So without
  keys a request's `Host` must be one of this gateway's names (see `hostnames.py`). With keys
  the key is the protection: a page cannot know it, and browsers never attach it by themselves.
"""

from __future__ import annotations

from lmgate.asgi import Scope
from lmgate.errors import Forbidden, GatewayError
from lmgate.guard.hostnames import HostNames, host_name
from lmgate.guard.paths import Scope as KeyScope

_GUARDED = (KeyScope.ADMIN, KeyScope.METRICS)  # admin routes, `/metrics`, model management
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_SAME_SITE = (b"same-origin", b"none")
_JSON = b"application/json"
JSON_ONLY = "lmgate.json_only"  # scope key: this request's body must be declared JSON
_SHOWN = 80  # longest header value quoted back in a message


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


def _shown(value: bytes) -> str:
    text = value.decode("latin-1")
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."


class OriginPolicy:
    """The checks above for one gateway. `Host` values already judged are remembered (a few
    hundred at most), so a keyless gateway pays a dictionary lookup per request, not a parse."""

    __slots__ = ("_judged", "hosts")
    REMEMBERED = 512

    def __init__(self, hosts: HostNames) -> None:
        self.hosts = hosts
        self._judged: dict[bytes, bool] = {}

    def check(self, scope: Scope, needed: KeyScope, *, keyless: bool) -> None:
        """Raise the refusal for a request a browser could have been tricked into sending."""
        if keyless:
            self._check_host(scope)
        if needed in _GUARDED:
            refuse_cross_site(scope)
            if scope["method"] not in _SAFE_METHODS:
                scope[JSON_ONLY] = True  # checked once the body is admitted (413 comes first)

    def _allowed(self, value: bytes) -> bool:
        known = self._judged.get(value)
        if known is None:
            known = self.hosts.allows(host_name(value.decode("latin-1")))
            if len(self._judged) >= self.REMEMBERED:
                self._judged.clear()
            self._judged[value] = known
        return known

    def _check_host(self, scope: Scope) -> None:
        for name, value in scope["headers"]:
            if name == b"host" and value and not self._allowed(value):
                raise Forbidden(
                    f"Host '{_shown(value)}' is not a name of this gateway: without API keys "
                    "only loopback names, the listen address and LMGATE_ALLOWED_HOSTS are "
                    "answered (a page elsewhere could otherwise reach it by DNS rebinding)",
                    code="host_not_allowed",
                )


def refuse_cross_site(scope: Scope) -> None:
    """Raise for a request a page of another site sent (`Sec-Fetch-Site`, `Origin`)."""
    host = b""
    for name, value in scope["headers"]:
        if name == b"host":
            host = value
            break
    for name, value in scope["headers"]:
        if name == b"sec-fetch-site" and value.strip().lower() not in _SAME_SITE:
            raise _cross_site(f"Sec-Fetch-Site: {_shown(value)}")
        if name == b"origin" and not _same_origin(value, host):
            raise _cross_site(f"Origin {_shown(value)}")


def _cross_site(what: str) -> Forbidden:
    return Forbidden(
        f"cross-site request refused ({what}): admin routes and model management answer only "
        "this gateway's own pages and clients that are not browsers",
        code="cross_site_request",
    )


def _authority(netloc: str, scheme: str) -> str:
    """`host[:port]` lower-cased, the scheme's default port left out, as browsers write it."""
    text = netloc.strip().lower().rstrip(".")
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and text.endswith(default):
        text = text[: -len(default)]
    return text


def _same_origin(origin: bytes, host: bytes) -> bool:
    """`Origin: scheme://authority` names the authority the request was sent to (`Host`).

    The scheme is not compared: behind a proxy that ends TLS the gateway sees plain HTTP, and
    no other server can answer for this very host and port."""
    scheme, sep, netloc = origin.strip().decode("latin-1").partition("://")
    if not sep or not netloc or "/" in netloc or not host:
        return False  # "null" (sandboxed pages, files) and anything malformed
    scheme = scheme.lower()
    return _authority(netloc, scheme) == _authority(host.decode("latin-1"), scheme)


def json_problem(scope: Scope) -> UnsupportedMediaType | None:
    """For a request marked `JSON_ONLY`: a declared content type must be JSON (a form type is
    refused even for an empty form). None declared is read as JSON, as before: browsers send
    `Origin` with every cross-origin write, so such a request is refused already when a page
    elsewhere sends it."""
    for name, value in scope["headers"]:
        if name == b"content-type" and value.split(b";", 1)[0].strip().lower() != _JSON:
            return UnsupportedMediaType(
                f"Content-Type {_shown(value)} is not accepted here: send the body as JSON "
                "with 'Content-Type: application/json' (curl: -H 'Content-Type: "
                "application/json')",
                param="Content-Type",
            )
    return None
