"""No key and no prompt ever reaches a log line or an event, whatever a client sends."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson

from lmgate.app import create_app
from lmgate.settings import Settings
from tests.security.tools import bearer, make_key
from tests.servers import ADMIN_KEY, API_KEY, METRICS_KEY, ServerProcess

PROMPT = "PROMPT-MARKER-5d1e0c"
WRONG = "lmg_wrongwrongwrongwrongwrongwrongwrongwrong00"


def _chat(key: str) -> dict[str, object]:
    return {
        "model": "qwen/qwen3-4b",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 4,
    }


def test_logs_hold_no_secrets(target: ServerProcess) -> None:
    key = make_key(target, name="leak-check", models=["qwen*"], rpm=1000)
    httpx.post(target.url + "/v1/chat/completions", headers=bearer(key), json=_chat(key))
    httpx.post(
        target.url + "/v1/chat/completions",
        headers=bearer(key),
        json={**_chat(key), "stream": True},
    )
    httpx.post(
        target.url + "/v1/chat/completions",
        headers=bearer(key),
        json={**_chat(key), "model": "other"},
    )
    httpx.get(target.url + "/v1/models", headers=bearer(WRONG))
    httpx.get(
        target.url + "/v1/models",
        headers={"Authorization": f"Bearer {API_KEY}", "x-api-key": WRONG},
    )
    httpx.post(target.url + "/admin/keys/leak-check/rotate", headers=bearer(ADMIN_KEY))
    scraper = make_key(target, name="leak-scraper", scope="metrics")
    for metrics_key in (METRICS_KEY, scraper):
        assert httpx.get(target.url + "/metrics", headers=bearer(metrics_key)).status_code == 200
        httpx.get(target.url + "/v1/models", headers=bearer(metrics_key))
        httpx.get(target.url + "/admin/state", headers=bearer(metrics_key))
    logs = target.logs()
    assert '"access_denied"' in logs and '"invalid_api_key"' in logs
    for secret in (key, WRONG, ADMIN_KEY, API_KEY, METRICS_KEY, scraper, PROMPT, key[4:20]):
        assert secret not in logs
    assert "lmg_" not in logs


async def test_events_hold_no_secrets(tmp_path: Path, emulator: ServerProcess) -> None:
    settings = Settings(
        data_dir=tmp_path, upstream=emulator.url, admin_key=ADMIN_KEY, api_keys=[API_KEY]
    )
    app = create_app(settings)
    gw = app.gateway
    await gw.start()
    try:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            made = await client.post(
                "/admin/keys", headers=bearer(ADMIN_KEY), json={"name": "ev", "models": ["qwen*"]}
            )
            key = made.json()["key"]
            await client.post("/v1/chat/completions", headers=bearer(key), json=_chat(key))
            await client.post(
                "/v1/chat/completions", headers=bearer(key), json={**_chat(key), "model": "x"}
            )
            await client.get("/v1/models", headers=bearer(WRONG))
            await client.get("/admin/keys", headers=bearer(API_KEY))
            await client.post("/admin/keys/ev/rotate", headers=bearer(ADMIN_KEY))
            await client.delete("/admin/keys/ev", headers=bearer(ADMIN_KEY))
        events = [e.as_json() for e in gw.bus.recent(10_000)]
    finally:
        await gw.stop()
    text = orjson.dumps(events).decode()
    types = {e["type"] for e in events}
    assert {"auth_denied", "key_created", "key_rotated", "key_revoked"} <= types
    denied = [e for e in events if e["type"] == "auth_denied"]
    assert {"invalid_api_key", "forbidden"} <= {e["reason"] for e in denied}
    assert all(e["address"] == "127.0.0.1" for e in denied)
    for secret in (key, WRONG, ADMIN_KEY, API_KEY, PROMPT):
        assert secret not in text
    assert "lmg_" not in text
