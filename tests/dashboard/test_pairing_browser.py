"""Adding a device end to end in Chromium: the admin shows a QR code in the dashboard, a phone
opens the link it carries, takes its key, and the key works; opening the link again fails."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import zxingcpp
from PIL import Image
from playwright.sync_api import expect

from tests.dashboard.helpers import shot, sign_in, view
from tests.servers import ServerProcess

PHONE_WIDTH = 390


def test_a_phone_pairs_from_the_dashboards_qr_code(
    page: Any,
    phone: Any,
    dash_gateway: ServerProcess,
    dash_admin: httpx.Client,
    artifacts: Path,
) -> None:
    sign_in(page, dash_gateway.url)
    view(page, "keys")
    page.fill("#pair-name", "Anna's phone")
    page.click("#pair-create")
    qr = page.locator("#pair-qr")
    expect(qr).to_be_visible()
    src = qr.get_attribute("src")
    assert src is not None and src.startswith("data:image/png;base64,")
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
    link = found[0].text
    assert link == page.locator("#pair-url").inner_text()
    # The link names the LAN address; the phone in this test reaches the gateway on loopback.
    path = link[link.index("/pair/") :]
    expect(page.locator("#pair-table")).to_contain_text("pending")
    shot(page, artifacts, "pairing-admin")

    phone.goto(dash_gateway.url + path)
    expect(phone.locator("#device")).to_have_text("Anna's phone")
    phone.click("#redeem")
    key_box = phone.locator("#key")
    expect(key_box).to_be_visible()
    key = key_box.inner_text().strip()
    assert key.startswith("lmg_")
    expect(phone.locator("#base-url")).to_contain_text("/v1")
    expect(phone.locator("#snippet-python")).to_contain_text(key)
    expect(phone.locator("#snippet-curl")).to_contain_text(key)
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE_WIDTH
    shot(phone, artifacts, "pairing-phone")

    answer = httpx.get(
        dash_gateway.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert answer.status_code == 200

    phone.reload()
    expect(phone.locator("#refused")).to_contain_text("already used")

    # The admin's page hears of it: the pairing is redeemed, the key lists its device.
    expect(page.locator("#pair-table")).to_contain_text("redeemed")
    expect(page.locator("#keys-table")).to_contain_text("Anna's phone")
    keys = dash_admin.get("/admin/keys").json()["keys"]
    assert [k["device"] for k in keys if k["name"] == "Annas-phone"] == ["Anna's phone"]
