"""Keys and usage in the browser: a key made on the page works at once and stops working when
revoked on the page; usage per day is charted from the gateway's accounting."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.dashboard.helpers import require_route, shot, sign_in, view
from tests.servers import ServerProcess

CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "Count my tokens"}]}


def test_create_use_and_revoke_a_key(
    page: Any, dash_gateway: ServerProcess, dash_admin: httpx.Client, artifacts: Path
) -> None:
    require_route(dash_admin, "/admin/keys")
    name = f"alice-{uuid.uuid4().hex[:6]}"
    sign_in(page, dash_gateway.url)
    view(page, "keys")
    page.fill("#key-name", name)
    page.fill("#key-rpm", "sixty")
    page.click("#key-create")
    expect(page.locator("#key-errors")).to_contain_text("rpm: must be a whole number")

    page.fill("#key-rpm", "60")
    page.fill("#key-models", "qwen*")
    page.click("#key-create")
    secret = page.locator("#new-key-value")
    expect(secret).to_be_visible()
    key = secret.inner_text().strip()
    assert len(key) > 30
    row = page.locator(f"#keys-table tr[data-key='{name}']")
    expect(row).to_contain_text("60 rpm")
    expect(row).to_contain_text("qwen*")
    expect(row).to_contain_text("active")
    assert key not in row.inner_text()  # the list shows a hint, never the key
    shot(page, artifacts, "06-keys-new-key")

    auth = {"Authorization": f"Bearer {key}"}
    assert (
        httpx.post(f"{dash_gateway.url}/v1/chat/completions", json=CHAT, headers=auth).status_code
        == 200
    )

    page.get_by_role("button", name="I have stored it").click()
    expect(secret).to_have_count(0)
    row.get_by_role("button", name="Revoke").click()
    row.get_by_role("button", name="Confirm revoke").click()
    expect(page.locator(".toast.ok")).to_contain_text(f"Key '{name}' revoked")
    expect(row).to_have_count(0)  # revoked keys are hidden by default
    page.check("#show-revoked")
    expect(row).to_contain_text("revoked")
    assert (
        httpx.post(f"{dash_gateway.url}/v1/chat/completions", json=CHAT, headers=auth).status_code
        == 401
    )

    page.reload()
    view(page, "keys")
    assert key not in page.content()


def test_create_a_metrics_key_for_prometheus(
    page: Any, dash_gateway: ServerProcess, dash_admin: httpx.Client
) -> None:
    require_route(dash_admin, "/admin/keys")
    name = f"prom-{uuid.uuid4().hex[:6]}"
    sign_in(page, dash_gateway.url)
    view(page, "keys")
    page.fill("#key-name", name)
    page.fill("#key-rpm", "60")
    page.select_option("#key-scope", "metrics")
    expect(page.locator("#key-rpm")).to_be_disabled()  # a metrics key takes no limits
    expect(page.locator("#key-models")).to_be_disabled()
    page.click("#key-create")
    secret = page.locator("#new-key-value")
    expect(secret).to_be_visible()
    key = secret.inner_text().strip()
    expect(page.locator(f"#keys-table tr[data-key='{name}']")).to_contain_text("metrics")
    expect(page.locator("#key-rpm")).to_be_enabled()  # the form is back to an inference key

    auth = {"Authorization": f"Bearer {key}"}
    scraped = httpx.get(f"{dash_gateway.url}/metrics", headers=auth)
    assert scraped.status_code == 200 and "lmgate_requests_total" in scraped.text
    chat = httpx.post(f"{dash_gateway.url}/v1/chat/completions", json=CHAT, headers=auth)
    assert chat.status_code == 403
    assert dash_admin.delete(f"/admin/keys/{name}").status_code == 200


def test_usage_per_day_chart(
    page: Any,
    dash_gateway: ServerProcess,
    dash_admin: httpx.Client,
    dash_user: httpx.Client,
    artifacts: Path,
) -> None:
    require_route(dash_admin, "/admin/usage")
    for stream in (False, True):
        assert (
            dash_user.post("/v1/chat/completions", json={**CHAT, "stream": stream}).status_code
            == 200
        )
    sign_in(page, dash_gateway.url)
    view(page, "keys")
    bars = page.locator("#usage-chart rect.bar")
    expect(bars.first).to_be_visible()
    expect(page.locator("#usage-legend")).to_contain_text("api-key-1")
    table = page.locator("#usage-table")
    expect(table).to_contain_text("api-key-1")
    expect(table).to_contain_text("qwen/qwen3-4b")
    expect(page.locator("#usage-note")).to_contain_text("requests")
    page.select_option("#usage-by", "model")
    expect(page.locator("#usage-legend")).to_contain_text("qwen/qwen3-4b")
    page.select_option("#usage-by", "key")
    shot(page, artifacts, "07-keys-usage")


def test_missing_endpoints_degrade_to_a_note(page: Any, dash_gateway: ServerProcess) -> None:
    """A gateway without request tracking, key management or usage (an older lmgate): the page
    says so where the feature would be, and the rest keeps working."""
    missing = ("/debug/requests", "/admin/keys", "/admin/usage")

    def not_found(route: Any) -> None:
        path = "/" + route.request.url.split("/", 3)[3].split("?")[0]
        body = {
            "error": {
                "message": f"no route for GET {path}",
                "type": "invalid_request_error",
                "code": "not_found",
            }
        }
        route.fulfill(status=404, content_type="application/json", body=json.dumps(body))

    for path in missing:
        page.route(f"**{path}*", not_found)
    sign_in(page, dash_gateway.url)
    view(page, "keys")
    expect(page.locator("#keys-unavailable")).to_contain_text("not available on this gateway")
    expect(page.locator("#key-form")).to_be_hidden()
    expect(page.locator("#usage-note")).to_contain_text("not available on this gateway")

    view(page, "live")
    expect(page.locator("#requests-source")).to_contain_text("not available on this gateway")
    httpx.post(
        f"{dash_gateway.url}/v1/chat/completions",
        json=CHAT,
        headers={
            "Authorization": "Bearer test-api-key-0123456789",
            "X-Request-ID": "from-stream-1",
        },
    )
    row = page.locator("#recent-rows tr[data-request='from-stream-1']")
    expect(row).to_contain_text("api-key-1")
    expect(row.locator("button")).to_have_count(0)
