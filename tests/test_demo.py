"""`make run`'s demo mode: no LM Studio around, so the built-in emulator becomes the upstream."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port


def _lm_studio_port_is_free() -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", 1234)) != 0


@pytest.mark.skipif(not _lm_studio_port_is_free(), reason="something listens on 127.0.0.1:1234")
def test_demo_fallback_serves_the_emulator(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    env["LMGATE_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmgate", "serve", "--port", str(port), "--demo-fallback"],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        models = None
        while time.monotonic() < deadline:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert models is not None and models.status_code == 200
        assert any(m["id"] == "qwen/qwen3-4b" for m in models.json()["data"])
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "DEMO MODE" in err


def test_explicit_upstream_disables_the_demo(tmp_path: Path) -> None:
    port = free_port()
    dead = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    env["LMGATE_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmgate",
            "serve",
            "--port",
            str(port),
            "--upstream",
            dead,
            "--demo-fallback",
        ],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert status == 503
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert "DEMO MODE" not in err
