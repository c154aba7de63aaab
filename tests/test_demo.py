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


def _serve_demo(tmp_path: Path, *args: str) -> tuple[int | None, str]:
    """Run `lmgate serve --demo-fallback ARGS`; return /v1/models' status and the stderr."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    env["LMGATE_DATA_DIR"] = str(tmp_path / "data")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmgate", "serve", "--port", str(port), "--demo-fallback", *args],
        env=env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    status = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            status = resp.status_code
            if status == 200:
                assert any(m["id"] == "qwen/qwen3-4b" for m in resp.json()["data"])
            break
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    return status, err


@pytest.mark.skipif(not _lm_studio_port_is_free(), reason="something listens on 127.0.0.1:1234")
def test_demo_fallback_serves_the_emulator(tmp_path: Path) -> None:
    status, err = _serve_demo(tmp_path)
    assert status == 200
    assert "DEMO MODE" in err


def test_explicit_upstream_disables_the_demo(tmp_path: Path) -> None:
    status, err = _serve_demo(tmp_path, "--upstream", f"http://127.0.0.1:{free_port()}")
    assert status == 503
    assert "DEMO MODE" not in err
