"""The tools permission on the keys page: chosen when a key is made, shown in the list, and
what the gateway then enforces."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from playwright.sync_api import expect

from tests.dashboard.helpers import require_route, sign_in, view
from tests.servers import ServerProcess

NATIVE = {"model": "qwen/qwen3-4b", "input": "hi", "integrations": ["mcp/filesystem"]}


def test_a_key_made_with_tools_allowed_may_use_them(
    page: Any, dash_gateway: ServerProcess, dash_admin: httpx.Client
) -> None:
    require_route(dash_admin, "/admin/keys")
    sign_in(page, dash_gateway.url)
    view(page, "keys")
    made: dict[str, str] = {}
    for tools in ("allow", ""):
        name = f"tools-{tools or 'default'}-{uuid.uuid4().hex[:6]}"
        page.fill("#key-name", name)
        page.select_option("#key-tools", tools)
        page.click("#key-create")
        secret = page.locator("#new-key-value")
        expect(secret).to_be_visible()
        made[tools] = secret.inner_text().strip()
        row = page.locator(f"#keys-table tr[data-key='{name}']")
        expect(row).to_contain_text("allow" if tools else "deny")
        page.get_by_role("button", name="I have stored it").click()
    page.select_option("#key-scope", "metrics")
    expect(page.locator("#key-tools")).to_be_disabled()  # a metrics key reaches no model

    for tools, status in (("allow", 200), ("", 403)):
        auth = {"Authorization": f"Bearer {made[tools]}"}
        answer = httpx.post(f"{dash_gateway.url}/api/v1/chat", json=NATIVE, headers=auth)
        assert answer.status_code == status, answer.text
