"""Pairing a device against a real gateway: a code made by an admin (API or CLI) is redeemed
once over HTTP(S) for a working key; every other use of it fails cleanly, guessing is damped
like bad keys, the QR code decodes to the link, and the code never shows up in records."""

from __future__ import annotations

import base64
import io
import re
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import zxingcpp
from PIL import Image

from lmgate.tls import make_lan_certificate
from tests.server_fixtures import emulator_fixture, gateway_fixture
from tests.servers import (
    ADMIN_KEY,
    ServerProcess,
    admin_headers,
    clean_env,
    free_port,
    serve_argv,
)

ENV = {
    "LMGATE_ADMIN_KEY": ADMIN_KEY,
    "LMGATE_AUTH_FAIL_LIMIT": "4",
    "LMGATE_AUTH_FAIL_EXEMPT": "",  # the tests' loopback client is counted like any other
}
CODE = re.compile(r"/pair/([A-Za-z0-9_-]{20})")


emulator = emulator_fixture(name="pair-emu")
gateway = gateway_fixture("emulator", env=ENV, scope="function")


def trusting(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


class HttpsServer(ServerProcess):
    """A gateway serving HTTPS: ready once it answers over TLS with the test CA."""

    ca: Path

    def start(self, timeout: float = 20.0) -> ServerProcess:
        log = self.log_path
        assert log is not None
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the HTTPS gateway exited: {self.logs()}")
            try:
                httpx.get(self.url + "/health", timeout=0.5, verify=trusting(self.ca))
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"no HTTPS gateway: {self.logs()}")


def https_gateway(
    tmp: Path, emulator: ServerProcess, cert: Path, key: Path, ca: Path
) -> ServerProcess:
    port = free_port()
    args = ["--upstream", emulator.url, "--tls-cert", str(cert), "--tls-key", str(key)]
    server = HttpsServer(
        serve_argv(port, *args),
        port=port,
        ready_path="/health",
        env=clean_env(LMGATE_DATA_DIR=str(tmp / "data"), **ENV),
        cwd=tmp,
        log=tmp / f"gateway-{port}.log",
    )
    server.url = f"https://127.0.0.1:{port}"
    server.ca = ca
    server.start()
    return server


def decode_qr(data_url_or_png: str | bytes) -> str:
    if isinstance(data_url_or_png, str):
        png = base64.b64decode(data_url_or_png.split(",", 1)[1])
    else:
        png = data_url_or_png
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(found) == 1
    return str(found[0].text)


def make_code(client: httpx.Client, **body: Any) -> dict[str, Any]:
    answer = client.post("/admin/pairing", json={"name": "Anna's phone", **body})
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_a_code_is_redeemed_once_for_a_working_key(gateway: ServerProcess) -> None:
    with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30) as admin:
        made = make_code(admin, models=["qwen/*"], rpm=30)
        code = made["code"]
        assert made["status"] == "pending" and made["keyName"] == "Annas-phone"
        assert decode_qr(made["qrImage"]) == made["url"]
        assert made["url"].endswith(f"/pair/{code}") and made["url"].startswith("http://")

        with httpx.Client(base_url=gateway.url, timeout=30) as phone:
            page = phone.get(f"/pair/{code}")
            assert page.status_code == 200 and "Anna&#x27;s phone" in page.text
            assert "default-src 'none'" in page.headers["content-security-policy"]
            assert code not in page.text  # the page redeems with its own path, nothing else
            again = phone.get(f"/pair/{code}")  # opening the link uses nothing up
            assert again.status_code == 200

            redeemed = phone.post(f"/pair/{code}")
            assert redeemed.status_code == 200, redeemed.text
            answer = redeemed.json()
            key = answer["key"]
            assert answer["keyName"] == "Annas-phone" and answer["baseUrl"].endswith("/v1")
            assert redeemed.headers["cache-control"] == "no-store"

            second = phone.post(f"/pair/{code}")
            assert second.status_code == 410
            assert second.json()["error"]["code"] == "pairing_code_gone"
            assert phone.get(f"/pair/{code}").status_code == 410

            # the key works, within what the pairing allowed
            models = phone.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert models.status_code == 200
            listed = {m["id"] for m in models.json()["data"]}
            assert listed and all(m.startswith("qwen/") for m in listed)
            denied = phone.get("/admin/keys", headers={"Authorization": f"Bearer {key}"})
            assert denied.status_code == 403

        keys = admin.get("/admin/keys").json()["keys"]
        mine = [k for k in keys if k["name"] == "Annas-phone"]
        assert len(mine) == 1 and mine[0]["scope"] == "inference" and mine[0]["rpm"] == 30
        audit = admin.get("/admin/pairing").json()["pairings"][0]
        assert audit["status"] == "redeemed" and audit["redeemedBy"] == "127.0.0.1"
        assert audit["keyId"] == mine[0]["id"] and audit["device"] == "Anna's phone"

        # the code is a credential: no record shows it
        recent = admin.get("/debug/requests").text
        assert code not in recent and "/pair/[code]" in recent
    assert code not in gateway.logs()


def test_two_phones_racing_for_one_code_get_one_key(gateway: ServerProcess) -> None:
    import concurrent.futures

    with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30) as admin:
        code = make_code(admin, name="tablet")["code"]

    def tap(_: int) -> int:
        with httpx.Client(base_url=gateway.url, timeout=30) as phone:
            return phone.post(f"/pair/{code}").status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(tap, range(8)))
    assert statuses == [200] + [410] * 7
    with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30) as admin:
        names = [k["name"] for k in admin.get("/admin/keys").json()["keys"]]
    assert names.count("tablet") == 1


def test_expired_and_cancelled_codes_fail_cleanly(gateway: ServerProcess) -> None:
    with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30) as admin:
        assert admin.post("/admin/pairing", json={"name": "x", "validFor": "5s"}).status_code == 400
        assert admin.post("/admin/pairing", json={"name": "x", "scope": "admin"}).status_code == 400
        made = make_code(admin, name="old laptop")
        cancelled = admin.delete(f"/admin/pairing/{made['id']}").json()
        assert cancelled["status"] == "cancelled"
        with httpx.Client(base_url=gateway.url, timeout=30) as phone:
            refused = phone.post(f"/pair/{made['code']}")
            assert refused.status_code == 410
            assert "cancelled" in refused.json()["error"]["message"]
            page = phone.get(f"/pair/{made['code']}")
            assert page.status_code == 410 and "cancelled" in page.text
    # expiry: made by the CLI with the shortest life, then waited out
    done = subprocess.run(
        [sys.executable, "-m", "lmgate", "pair", "--name", "kiosk", "--valid-for", "1m", "--json"],
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    import orjson

    made = orjson.loads(done.stdout)
    import sqlite3

    data_dir = Path(gateway.env["LMGATE_DATA_DIR"])
    with sqlite3.connect(data_dir / "lmgate.sqlite3") as conn:  # let a minute pass at once
        conn.execute(
            "UPDATE pairing_codes SET expires_at = expires_at - 120 WHERE id=?", (made["id"],)
        )
    with httpx.Client(base_url=gateway.url, timeout=30) as phone:
        refused = phone.post(f"/pair/{made['code']}")
    assert refused.status_code == 410 and "expired" in refused.json()["error"]["message"]


def test_guessing_codes_is_damped_like_bad_keys(gateway: ServerProcess) -> None:
    with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30) as admin:
        real = make_code(admin, name="guessed")["code"]
    statuses = []
    with httpx.Client(base_url=gateway.url, timeout=30) as guesser:
        for n in range(6):
            statuses.append(guesser.post(f"/pair/{'A' * 19}{n}").status_code)
        assert statuses[:4] == [404] * 4 and statuses[4:] == [429, 429]
        blocked = guesser.post(f"/pair/{real}")  # even the right code, once blocked
        assert blocked.status_code == 429 and "retry-after" in blocked.headers
        assert guesser.get(f"/pair/{real}").status_code == 429
        bad_shape = guesser.get("/pair/not-a-code")
        assert bad_shape.status_code == 429


def test_a_hostile_page_cannot_redeem_for_the_phone(gateway: ServerProcess) -> None:
    with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30) as admin:
        code = make_code(admin, name="victim")["code"]
    with httpx.Client(base_url=gateway.url, timeout=30) as browser:
        refused = browser.post(
            f"/pair/{code}",
            headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        )
        assert refused.status_code == 403
        assert browser.post(f"/pair/{code}").status_code == 200  # still unused, then used


def test_pending_codes_are_bounded(gateway: ServerProcess) -> None:
    with httpx.Client(base_url=gateway.url, headers=admin_headers(), timeout=30) as admin:
        for n in range(50):
            assert admin.post("/admin/pairing", json={"name": f"d{n}"}).status_code == 201
        over = admin.post("/admin/pairing", json={"name": "one too many"})
        assert over.status_code == 400 and "still waiting" in over.json()["error"]["message"]


def test_over_tls_the_link_and_the_page_carry_the_ca_fingerprint(
    tmp_path: Path, emulator: ServerProcess
) -> None:
    import ipaddress

    files = make_lan_certificate(
        tmp_path / "tls", ["localhost"], [ipaddress.ip_address("127.0.0.1")]
    )
    server = https_gateway(tmp_path, emulator, files.cert, files.key, files.ca)
    try:
        with httpx.Client(
            base_url=server.url,
            headers=admin_headers(),
            verify=trusting(files.ca),
            timeout=30,
        ) as admin:
            made = make_code(admin)
            link = decode_qr(made["qrImage"])
            plain = files.fingerprint.replace(":", "").upper()
            assert link == made["url"] and link.startswith("https://")
            assert link.endswith(f"#fp={plain}") and made["caFingerprint"] == files.fingerprint
            page = admin.get(CODE.search(link).group(0))  # type: ignore[union-attr]
            assert f'data-fingerprint="{files.fingerprint}"' in page.text
            der = admin.get("/pair/ca.crt")
            import hashlib

            assert hashlib.sha256(der.content).hexdigest().upper() == plain
            assert admin.get("/pair/ca.pem").content == files.ca.read_bytes()
            profile = admin.get("/pair/ca.mobileconfig")
            import plistlib

            parsed = plistlib.loads(profile.content)
            assert parsed["PayloadContent"][0]["PayloadContent"] == der.content
            assert parsed["PayloadContent"][0]["PayloadType"] == "com.apple.security.root"
    finally:
        server.stop()


def test_the_cli_prints_a_scannable_code_and_a_png(gateway: ServerProcess, tmp_path: Path) -> None:
    png = tmp_path / "qr.png"
    done = subprocess.run(
        [
            sys.executable, "-m", "lmgate", "pair", "--name", "Anna's phone",
            "--url", "http://192.0.2.10:1234", "--png", str(png),
        ],
        env=gateway.env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    match = CODE.search(done.stdout)
    assert match is not None and "█" in done.stdout
    link = decode_qr(png.read_bytes())
    assert link == f"http://192.0.2.10:1234{match.group(0)}"
    with httpx.Client(base_url=gateway.url, timeout=30) as phone:  # any worker redeems it
        assert phone.post(match.group(0)).status_code == 200
