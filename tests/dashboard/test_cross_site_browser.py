"""A hostile page in a real browser (Chromium) against a gateway without keys.

Chromium resolves `attacker.example` and `gpu-box.lan` to 127.0.0.1 (`--host-resolver-rules`),
which is exactly where a DNS rebinding attack ends: the attacker's name, this machine's address.
The attacker's page, served by its own server, tries what any site could: a `text/plain` form
POST and `no-cors` fetches to `/admin/keys` and to LM Studio's model management. Then the page
is opened under the attacker's name on the gateway's own port, where its requests are
same-origin for the browser. Nothing may get through, while the dashboard keeps working under a
name the operator configured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.dashboard.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.dashboard.helpers import sign_in, view
from tests.servers import ServerProcess, start_gateway, upstream_requests

GEMMA = "google/gemma-3-1b"
RESOLVER = "--host-resolver-rules=MAP attacker.example 127.0.0.1, MAP gpu-box.lan 127.0.0.1"

ATTACK_PAGE = """<!doctype html>
<title>cute cats</title>
<iframe name="sink"></iframe>
<form id="plant" method="POST" action="{gw}/admin/keys" enctype="text/plain" target="sink">
  <input name='{{"name": "planted", "scope": "admin", "pad": "' value='"}}'>
</form>
<script>
  const quiet = {{ method: "POST", mode: "no-cors", headers: {{ "Content-Type": "text/plain" }} }};
  Promise.allSettled([
    fetch("{gw}/admin/keys", {{ ...quiet, body: '{{"name": "planted2", "scope": "admin"}}' }}),
    fetch("{gw}/api/v1/models/load", {{ ...quiet, body: '{{"model": "google/gemma-3-1b"}}' }}),
    fetch("{gw}/admin/models/activate", {{ ...quiet, body: '{{"modelKey": "evil"}}' }}),
  ]).then(() => {{ document.getElementById("plant").submit(); document.title = "sent"; }});
</script>
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium that resolves the attacker's names to this machine."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"BROWSER TESTS NOT RUN: {CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    args = [*CHROMIUM_ARGS, RESOLVER, "--disable-features=HttpsUpgrades"]
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        yield chromium
        chromium.close()


@pytest.fixture
def keyless(tmp_path: Path, dash_emulator: ServerProcess) -> Iterator[ServerProcess]:
    server = start_gateway(tmp_path, dash_emulator.url, env={"LMGATE_ALLOWED_HOSTS": "gpu-box.lan"})
    yield server
    server.stop()


@pytest.fixture
def attacker_site(keyless: ServerProcess) -> Iterator[str]:
    page = ATTACK_PAGE.format(gw=keyless.url).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://attacker.example:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def assert_still_keyless(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/admin/keys").json()["keys"] == []
    assert httpx.get(server.url + "/admin/state").json()["activeModel"] is None
    assert httpx.get(server.url + "/v1/models").status_code == 200  # auth is still off


def refusals(server: ServerProcess, reason: str) -> int:
    """Refusals the gateway logged (one `access_denied` line each, naming the reason)."""
    return server.logs().count(reason)


def test_a_page_elsewhere_cannot_plant_a_key_or_load_a_model(
    page: Any, keyless: ServerProcess, attacker_site: str, dash_upstream: httpx.Client
) -> None:
    dash_upstream.delete("/__emulator/requests")
    page.goto(attacker_site)
    expect(page).to_have_title("sent")
    deadline = time.monotonic() + 15
    while refusals(keyless, "cross_site_request") < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert refusals(keyless, "cross_site_request") >= 4, keyless.logs()[-3000:]
    assert_still_keyless(keyless)
    loads = [r for r in upstream_requests(dash_upstream) if r["method"] == "POST"]
    assert loads == []


def test_dns_rebinding_reaches_nothing(page: Any, keyless: ServerProcess) -> None:
    """The attacker's name now points here: the page is same-origin with the gateway's port."""
    rebound = f"http://attacker.example:{keyless.port}"
    first = page.goto(f"{rebound}/dashboard/")
    assert first is not None and first.status == 403
    statuses = page.evaluate(
        """async () => {
            const json = { "Content-Type": "application/json" };
            const body = JSON.stringify({ name: "planted", scope: "admin" });
            const answers = await Promise.all([
                fetch("/v1/models"),
                fetch("/admin/state"),
                fetch("/admin/keys", { method: "POST", headers: json, body }),
                fetch("/v1/chat/completions", { method: "POST", headers: json,
                    body: JSON.stringify({ messages: [{ role: "user", content: "hi" }] }) }),
            ]);
            return Promise.all(answers.map(async (a) => [a.status, (await a.json()).error.code]));
        }"""
    )
    assert statuses == [[403, "host_not_allowed"]] * 4
    assert_still_keyless(keyless)


def test_the_dashboard_works_under_a_configured_name(page: Any, keyless: ServerProcess) -> None:
    """Same-origin writes from the dashboard pass: the browser's own `Origin` and
    `Sec-Fetch-Site` say so, under a name the operator put in LMGATE_ALLOWED_HOSTS."""
    sign_in(page, f"http://gpu-box.lan:{keyless.port}", key="")
    expect(page.locator("#upstream-health")).to_have_text("reachable")
    view(page, "models")
    page.locator(f"article[data-model='{GEMMA}']").get_by_role(
        "button", name="Activate\u2026"
    ).click()
    page.fill("#di-temperature", "0.4")
    page.click("#form-submit")
    expect(page.locator("#active-model")).to_have_text(GEMMA)
    state = httpx.get(keyless.url + "/admin/state").json()
    assert state["activeModel"] == GEMMA and state["defaultInference"] == {"temperature": 0.4}
