"""The dashboard's files over HTTP: public but behind the allowlist, with security headers,
nothing but shipped files, and nothing that reaches beyond the gateway."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from lmgate.dashboard.routes import CSP
from tests.servers import ADMIN_KEY, ServerProcess, raw_status, start_gateway

STATIC = Path(__file__).resolve().parents[2] / "src" / "lmgate" / "dashboard" / "static"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def test_page_and_assets_need_no_key(dash_gateway: ServerProcess) -> None:
    page = httpx.get(f"{dash_gateway.url}/dashboard/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="app.js"></script>' in page.text
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        asset = httpx.get(f"{dash_gateway.url}/dashboard/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(kind)
        assert asset.content == (STATIC / name).read_bytes()
    # The API behind it still needs the admin key.
    assert httpx.get(f"{dash_gateway.url}/admin/upstream").status_code == 401


def test_security_headers(dash_gateway: ServerProcess) -> None:
    for path in ("/dashboard/", "/dashboard/app.js", "/dashboard/missing.js", "/dashboard"):
        answer = httpx.get(f"{dash_gateway.url}{path}")
        assert answer.headers["content-security-policy"] == CSP, path
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-content-type-options"] == "nosniff"
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"


def test_redirect_missing_files_methods_and_caching(dash_gateway: ServerProcess) -> None:
    base = dash_gateway.url
    bare = httpx.get(f"{base}/dashboard")
    assert bare.status_code == 308
    assert bare.headers["location"] == "dashboard/"
    missing = httpx.get(f"{base}/dashboard/secrets.txt")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert httpx.post(f"{base}/dashboard/", content=b"{}").status_code == 405
    head = httpx.head(f"{base}/dashboard/app.js")
    assert head.status_code == 200 and head.content == b""
    etag = head.headers["etag"]
    again = httpx.get(f"{base}/dashboard/app.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""


def test_paths_out_of_the_dashboard_are_not_public(dash_gateway: ServerProcess) -> None:
    """`/dashboard/../admin` is `/admin` after normalisation, and needs the admin key."""
    for path in (
        "/dashboard/../admin/state",
        "/dashboard/%2e%2e/admin/state",
        "/dashboard/..%2fadmin/state",
        "/dashboard%2f..%2fdebug/metrics",
    ):
        assert raw_status(dash_gateway.port, "GET", path, {}) == 401, path
        with_key = {"Authorization": f"Bearer {ADMIN_KEY}"}
        assert raw_status(dash_gateway.port, "GET", path, with_key) == 200, path
    # A name that merely starts like the prefix is not the dashboard.
    assert httpx.get(f"{dash_gateway.url}/dashboardx").status_code == 401


def test_allowlist_still_applies(tmp_root: Path, dash_emulator: ServerProcess) -> None:
    gateway = start_gateway(
        tmp_root,
        dash_emulator.url,
        "--allow",
        "10.99.0.0/16",
        env={"LMGATE_ADMIN_KEY": ADMIN_KEY},
    )
    try:
        answer = httpx.get(f"{gateway.url}/dashboard/")
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "address_not_allowed"
        assert httpx.get(f"{gateway.url}/dashboard/app.js").status_code == 403
    finally:
        gateway.stop()


@pytest.mark.parametrize("path", sorted(p.name for p in STATIC.iterdir()))
def test_static_files_stay_on_this_origin(path: str) -> None:
    """No inline script or style, no external URL: the CSP would block them anyway."""
    text = (STATIC / path).read_text()
    assert re.findall(r"https?://[^\s\"')]+", text.replace(SVG_NAMESPACE, "")) == []
    if path.endswith(".html"):
        scripts = re.findall(r"<script\b[^>]*>", text)
        assert scripts and all(" src=" in tag for tag in scripts)
        assert re.search(r"<script\b[^>]*>\s*[^<\s]", text) is None
        assert " style=" not in text and "<style" not in text
        assert re.search(r"\son[a-z]+=", text) is None
    if path.endswith(".js"):
        assert ".innerHTML" not in text and "eval(" not in text and "new Function" not in text
        assert "localStorage" not in text  # the key lives in sessionStorage only
