"""`lmgate serve` and `lmgate doctor` at start, as a person runs them: the port, TLS files, the
upstream URL, keys, the data dir, and a configuration written for the TypeScript edition."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from tests.servers import (
    ADMIN_KEY,
    ServerProcess,
    clean_env,
    free_port,
    serve_argv,
    start_gateway,
    upstream_requests,
)

STRONG_KEY = "Zq4T-pX9c2LmW7rVb0sNe5yKu3HdGj8A"


def _run(args: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lmgate", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _serving(
    tmp_path: Path, *args: str, env: Mapping[str, str] | None = None, ready: str = "/health"
) -> ServerProcess:
    """`lmgate serve ARGS` on a free port, its stderr in `.logs()`."""
    port = free_port()
    full = clean_env(**{"LMGATE_DATA_DIR": str(tmp_path / f"data-{port}"), **(env or {})})
    return ServerProcess(
        serve_argv(port, *args),
        port=port,
        ready_path=ready,
        env=full,
        cwd=tmp_path,
        log=tmp_path / f"serve-{port}.log",
    ).start(timeout=40)


@pytest.fixture
def held_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_port_in_use_is_named_before_anything_starts(
    tmp_path: Path, emulator: ServerProcess, held_port: int, workers: str
) -> None:
    env = clean_env(LMGATE_DATA_DIR=str(tmp_path / "data"))
    args = ["serve", "--port", str(held_port), "--upstream", emulator.url, "--workers", workers]
    started = time.monotonic()
    out = _run(args, env, tmp_path)
    assert time.monotonic() - started < 20
    assert out.returncode == 1, out.stderr
    assert "listening on" not in out.stderr and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert f"port {held_port} is already in use" in line
    assert "--port" in line and f"ss -ltnp 'sport = :{held_port}'" in line
    assert f"(pid {os.getpid()})" in line  # what holds it


def test_listening_is_said_only_once_true(tmp_path: Path, emulator: ServerProcess) -> None:
    port = free_port()
    proc = subprocess.Popen(
        serve_argv(port, "--upstream", emulator.url),
        env=clean_env(LMGATE_DATA_DIR=str(tmp_path / "data")),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listening on" in line:
                assert f"http://127.0.0.1:{port} -> {emulator.url}" in line
                # bound and listening: a connection is accepted (queued) at once
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
                break
        else:
            raise AssertionError("no listening line")
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=20).status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_port_zero_says_the_port_it_got(tmp_path: Path, emulator: ServerProcess) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmgate", "serve", "--port", "0", "--upstream", emulator.url],
        env=clean_env(LMGATE_DATA_DIR=str(tmp_path / "data")),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = next(line for line in proc.stderr if "listening on" in line)
        port = int(line.split("http://127.0.0.1:", 1)[1].split(" ", 1)[0])
        assert port > 0
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=20).status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_missing_or_bad_tls_files_are_named(tmp_path: Path) -> None:
    env = clean_env(LMGATE_DATA_DIR=str(tmp_path / "data"))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    out = _run(["serve", "--tls-cert", str(cert), "--tls-key", str(key)], env, tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert str(cert) in line and "does not exist" in line and "--tls-cert" in line
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n")
    env["LMGATE_TLS_KEY"] = str(key)
    out = _run(["serve", "--tls-cert", str(cert)], env, tmp_path)
    (line,) = out.stderr.strip().splitlines()
    assert str(key) in line and "LMGATE_TLS_KEY" in line
    key.write_text("garbage")
    out = _run(["serve", "--tls-cert", str(cert)], env, tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert str(cert) in line and str(key) in line and "PEM" in line
    doctor = _run(["doctor", "--tls-cert", str(cert)], env, tmp_path)
    assert doctor.returncode == 1 and f"[FAIL] tls: cannot serve TLS with certificate {cert}" in (
        doctor.stdout
    )


def test_open_gateway_on_the_network_says_so(tmp_path: Path, emulator: ServerProcess) -> None:
    server = _serving(
        tmp_path, "--host", "0.0.0.0", "--insecure-no-auth", "--upstream", emulator.url
    )
    try:
        line = next(x for x in server.logs().splitlines() if "listening on" in x)
        assert "loopback only" not in line
        assert f"AUTH OFF: anyone who reaches port {server.port} can use the models" in line
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("name", "key", "why"),
    [
        ("LMGATE_ADMIN_KEY", "1", "shorter than 16"),
        ("GATEWAY_API_KEY", "changemechangeme", "fewer than 8 different"),
        ("LMGATE_API_KEYS", f"{STRONG_KEY},administrator123", "dictionary words"),
    ],
)
def test_weak_keys_warn_in_serve_and_fail_in_doctor(
    tmp_path: Path, emulator: ServerProcess, name: str, key: str, why: str
) -> None:
    env = {name: key, "LMGATE_ADMIN_ALLOW": "127.0.0.1"}
    server = _serving(tmp_path, "--host", "0.0.0.0", "--upstream", emulator.url, env=env)
    try:
        logs = server.logs()
        assert f"WARNING: weak key in {name}" in logs and why in logs
        weak = key.split(",")[-1]
        assert len(weak) < 4 or weak not in logs  # the key itself is never printed
    finally:
        server.stop()
    base = clean_env(LMGATE_DATA_DIR=str(tmp_path / "d"), **env)
    doctor = _run(["doctor", "--host", "0.0.0.0", "--upstream", emulator.url], base, tmp_path)
    assert doctor.returncode == 1
    assert f"[FAIL] weak-key: weak key in {name}" in doctor.stdout
    loopback = _run(["doctor", "--upstream", emulator.url], base, tmp_path)
    assert "weak-key" not in loopback.stdout  # only a listener others reach makes it matter


def test_data_dir_with_default_permissions(tmp_path: Path, emulator: ServerProcess) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)  # what `mkdir` makes under the usual umask
    env = clean_env(LMGATE_DATA_DIR=str(data))
    doctor = _run(["doctor", "--upstream", emulator.url], env, tmp_path)
    assert doctor.returncode == 1
    assert f"[FAIL] permissions: data dir {data} is open to others (755): chmod 700" in (
        doctor.stdout
    )
    assert "lmgate serve does this when it starts" in doctor.stdout
    server = _serving(tmp_path, "--upstream", emulator.url, env={"LMGATE_DATA_DIR": str(data)})
    try:
        assert f"{data} was open to others (755): made it 700" in server.logs()
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
    finally:
        server.stop()
    again = _run(["doctor", "--upstream", emulator.url], env, tmp_path)
    assert again.returncode == 0, again.stdout


def test_upstream_without_scheme_or_with_v1(
    tmp_path: Path, emulator: ServerProcess, upstream: httpx.Client
) -> None:
    bare = emulator.url.removeprefix("http://")
    for given, note in ((bare, "has no scheme"), (emulator.url + "/v1", "ends in /v1")):
        server = _serving(tmp_path, "--upstream", given)
        try:
            assert note in server.logs() and f"using {emulator.url}" in server.logs()
            assert f"-> {emulator.url} " in server.logs()
            upstream.delete("/__emulator/requests")
            resp = httpx.get(server.url + "/v1/models", timeout=20)
            assert resp.status_code == 200, resp.text
            paths = [r["path"] for r in upstream_requests(upstream)]
            assert "/v1/models" in paths and not any("/v1/v1" in str(p) for p in paths)
        finally:
            server.stop()


def test_upstream_that_does_not_answer_gets_a_banner(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    server = _serving(tmp_path, "--upstream", dead)
    try:
        logs = server.logs()
        assert f"UPSTREAM NOT ANSWERING: nothing answers at {dead}" in logs
        assert "--upstream URL" in logs
        assert logs.index("UPSTREAM NOT ANSWERING") < logs.index("listening on")
    finally:
        server.stop()


def test_root_points_to_the_dashboard(tmp_path: Path, emulator: ServerProcess) -> None:
    gateway = start_gateway(tmp_path, emulator.url, env={"LMGATE_ADMIN_KEY": ADMIN_KEY})
    try:
        browser = httpx.get(
            gateway.url + "/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        )
        assert browser.status_code == 302 and browser.headers["location"] == "/dashboard/"
        page = httpx.get(gateway.url + "/", headers={"Accept": "text/html"}, follow_redirects=True)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        api = httpx.get(gateway.url + "/")
        assert api.status_code == 200 and api.json()["dashboard"] == "/dashboard/"
        assert httpx.get(gateway.url + "/v1/models").status_code == 401  # still keyed
    finally:
        gateway.stop()


LAN = {"X-Forwarded-For": "192.168.1.7"}  # a LAN client, as a trusted local proxy reports it


def test_edition_configuration_keeps_admin_on_the_allowed_network(
    tmp_path: Path, emulator: ServerProcess
) -> None:
    env = {
        "GATEWAY_API_KEY": STRONG_KEY,
        "IP_ALLOWLIST": "192.168.1.0/24,127.0.0.1",
        "LMGATE_TRUSTED_PROXIES": "127.0.0.1",
    }
    gateway = start_gateway(tmp_path, emulator.url, env=env)
    auth = {"Authorization": f"Bearer {STRONG_KEY}"}
    try:
        assert httpx.get(gateway.url + "/admin/state", headers={**auth, **LAN}).status_code == 200
        assert httpx.get(gateway.url + "/debug/status", headers={**auth, **LAN}).status_code == 200
        other = {"X-Forwarded-For": "192.168.2.9"}
        assert httpx.get(gateway.url + "/admin/state", headers={**auth, **other}).status_code == 403
        logs = " ".join(gateway.logs().split())  # the banner is wrapped
        assert "WARNING: admin routes (/admin/*, /debug/*) answer 192.168.1.0/24" in logs
        assert "as in the TypeScript edition" in logs and "LMGATE_ADMIN_ALLOW=127.0.0.1" in logs
        doctor = _run(
            ["doctor", "--upstream", emulator.url],
            clean_env(LMGATE_DATA_DIR=str(tmp_path / "doctor"), **env),
            tmp_path,
        )
        assert "[WARN] admin-allow: admin routes" in doctor.stdout
    finally:
        gateway.stop()
    restricted = start_gateway(
        tmp_path, emulator.url, env={**env, "LMGATE_ADMIN_ALLOW": "127.0.0.1"}
    )
    try:
        denied = httpx.get(restricted.url + "/admin/state", headers={**auth, **LAN})
        assert denied.status_code == 403
        message = denied.json()["error"]["message"]
        assert "LMGATE_ADMIN_ALLOW=127.0.0.1,192.168.1.7" in message
        assert "TypeScript edition" not in restricted.logs()
    finally:
        restricted.stop()


def test_edition_log_level_and_default_address(tmp_path: Path, emulator: ServerProcess) -> None:
    server = _serving(tmp_path, "--upstream", emulator.url, env={"LOG_LEVEL": "warn"})
    try:
        assert httpx.get(server.url + "/v1/models", timeout=20).status_code == 200
        assert "Application startup complete" not in server.logs()  # info is off
    finally:
        server.stop()
    env = clean_env(
        LMGATE_DATA_DIR=str(tmp_path / "d"), LMSTUDIO_BASE_URL=emulator.url, LOG_LEVEL="warn"
    )
    doctor = _run(["doctor"], env, tmp_path)
    assert "[WARN] config: the TypeScript edition listened on 0.0.0.0:8001" in doctor.stdout
    assert "GATEWAY_HOST=0.0.0.0 GATEWAY_PORT=8001" in doctor.stdout
