"""Keys page: keys from settings listed read-only, rotate from the page (the new key shown
once, the old one refused), an Expires field that does not suggest a default, and usage of
requests that named no model labelled as such."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.dashboard.helpers import require_route, shot, sign_in, view
from tests.servers import ServerProcess

CHAT = {"model": "qwen/qwen3-4b", "messages": [{"role": "user", "content": "Hi"}]}


def test_settings_keys_are_listed_read_only(
    page: Any, dash_gateway: ServerProcess, dash_admin: httpx.Client
) -> None:
    require_route(dash_admin, "/admin/keys")
    listed = dash_admin.get("/admin/keys").json()
    by_name = {k["name"]: k for k in listed["settingsKeys"]}
    assert by_name["admin"]["scope"] == "admin" and by_name["admin"]["source"] == "settings"
    assert by_name["api-key-1"]["scope"] == "inference"
    shown = {"name", "scope", "source", "tools", "weight", "priority", "loads", "loadsDefault"}
    assert all(set(k) == shown | {"maxLoadsPerHour"} for k in listed["settingsKeys"])

    sign_in(page, dash_gateway.url)
    view(page, "keys")
    for name, scope in (("admin", "admin"), ("api-key-1", "inference")):
        row = page.locator(f"#keys-table tr[data-source='settings'][data-key='{name}']")
        expect(row).to_contain_text(scope)
        expect(row).to_contain_text("from settings")
        expect(row).to_contain_text("read-only")
        expect(row.get_by_role("button")).to_have_count(0)

    expires = page.locator("#key-expires")
    assert expires.get_attribute("placeholder") == "never"
    expect(page.locator("label[for=key-expires]")).to_contain_text("empty = never")


def test_rotate_a_key_on_the_page(
    page: Any, dash_gateway: ServerProcess, dash_admin: httpx.Client, artifacts: Path
) -> None:
    require_route(dash_admin, "/admin/keys")
    name = f"rot-{uuid.uuid4().hex[:6]}"
    made = dash_admin.post("/admin/keys", json={"name": name, "rpm": 100, "weight": 2})
    assert made.status_code == 201, made.text
    old = made.json()["key"]
    url = f"{dash_gateway.url}/v1/chat/completions"
    assert httpx.post(url, json=CHAT, headers={"Authorization": f"Bearer {old}"}).is_success

    sign_in(page, dash_gateway.url)
    view(page, "keys")
    row = page.locator(f"#keys-table tr[data-key='{name}']")
    row.get_by_role("button", name="Rotate").click()
    row.get_by_role("button", name="Confirm rotate").click()
    secret = page.locator("#new-key-value")
    expect(secret).to_be_visible()
    expect(page.locator("#new-key")).to_contain_text(f"Rotated key for '{name}'")
    new = secret.inner_text().strip()
    assert len(new) > 30 and new != old
    expect(row).to_contain_text("100 rpm")  # same key, same limits
    for line in ("weight 2", "priority 0", "loads allow*"):
        expect(row.locator("td[data-label='Limits']")).to_contain_text(line)
    assert new not in row.inner_text()
    shot(page, artifacts, "11-keys-rotated")

    assert httpx.post(url, json=CHAT, headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert httpx.post(url, json=CHAT, headers={"Authorization": f"Bearer {new}"}).is_success
    page.get_by_role("button", name="I have stored it").click()
    expect(secret).to_have_count(0)


def test_usage_without_a_model_is_labelled_so(
    page: Any, dash_gateway: ServerProcess, dash_admin: httpx.Client, dash_user: httpx.Client
) -> None:
    require_route(dash_admin, "/admin/usage")
    # No model named: the gateway answers with its default, but usage records no model.
    answer = dash_user.post("/v1/chat/completions", json={"messages": CHAT["messages"]})
    assert answer.is_success, answer.text
    deadline = time.monotonic() + 20
    while True:
        groups = dash_admin.get("/admin/usage?groupBy=key,model").json()["groups"]
        if any(g["key"] == "api-key-1" and g["model"] is None for g in groups):
            break
        assert time.monotonic() < deadline, groups
        time.sleep(0.2)

    sign_in(page, dash_gateway.url)
    view(page, "keys")
    models = page.locator("#usage-table td[data-label='Model']")
    expect(models.filter(has_text="(no model)")).to_have_count(1)
    assert "all" not in models.all_inner_texts()
    page.select_option("#usage-by", "model")
    expect(page.locator("#usage-legend")).to_contain_text("(no model)")
