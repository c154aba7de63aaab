"""HTTPS with a certificate from `lmgate tls selfsigned`, verified the strict way."""

from __future__ import annotations

import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.security.tools import bearer, lmgate_cli
from tests.servers import API_KEY, ServerProcess, clean_env, free_port, serve_argv


@pytest.fixture(scope="module")
def certs(tmp_root: Path) -> Path:
    out = tmp_root / "tls"
    made = lmgate_cli(
        "tls",
        "selfsigned",
        "--out",
        str(out),
        "--name",
        "gpu-box.lan",
        data_dir=tmp_root / "tls-data",
    )
    assert made.returncode == 0, made.stderr
    assert "--tls-cert" in made.stdout and "SSL_CERT_FILE" in made.stdout
    again = lmgate_cli("tls", "selfsigned", "--out", str(out), data_dir=tmp_root / "tls-data")
    assert again.returncode == 1 and "--force" in again.stderr
    return out


@pytest.fixture(scope="module")
def https_gateway(tmp_root: Path, certs: Path, emulator: ServerProcess) -> Iterator[str]:
    port = free_port()
    env = clean_env(LMGATE_DATA_DIR=str(tmp_root / "tls-data"), LMGATE_API_KEYS=API_KEY)
    log = (tmp_root / f"https-{port}.log").open("wb")
    args = ["--tls-cert", str(certs / "cert.pem"), "--tls-key", str(certs / "key.pem")]
    proc = subprocess.Popen(
        serve_argv(port, "--upstream", emulator.url, *args),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/health", verify=False, timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _strict(ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # what newer Pythons turn on by default
    return context


def test_files_and_names(certs: Path) -> None:
    assert stat.S_IMODE((certs / "key.pem").stat().st_mode) == 0o600
    leaf, ca = x509.load_pem_x509_certificates((certs / "cert.pem").read_bytes())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "gpu-box.lan"} <= set(san.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "::1"} <= {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
    assert days <= 825


def test_https_with_the_ca(https_gateway: str, certs: Path) -> None:
    context = _strict(certs / "ca.pem")
    ok = httpx.get(https_gateway + "/v1/models", headers=bearer(API_KEY), verify=context)
    assert ok.status_code == 200
    by_name = https_gateway.replace("127.0.0.1", "localhost")
    assert httpx.get(by_name + "/health", verify=context).status_code == 200


def test_https_refuses_unverified_and_plain(https_gateway: str) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(https_gateway + "/health")  # the system store does not know this CA
    plain = https_gateway.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(plain + "/health", timeout=3)


def test_tls_needs_both_files(tmp_path: Path, certs: Path) -> None:
    out = lmgate_cli(
        "serve", "--port", "1", "--tls-cert", str(certs / "cert.pem"), data_dir=tmp_path
    )
    assert out.returncode == 2 and "--tls-key" in out.stderr
