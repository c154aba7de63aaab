"""`make run`'s demo mode: no LM Studio around, so the built-in emulator becomes the upstream.

Where demo mode looks for LM Studio is set by the session fixture `no_lm_studio` (a port that
never answers) or by a test, never this machine's port 1234, so the outcome is the same on a
machine where LM Studio (or anything else) listens there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lmgate.demo import LM_STUDIO_ENV
from tests.servers import ServerProcess, free_port, upstream_requests


def _serve_demo(tmp_path: Path, *args: str, lm_studio: str | None = None) -> tuple[int | None, str]:
    """Run `lmgate serve --demo-fallback ARGS`; return /v1/models' status and the stderr."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    env["LMGATE_DATA_DIR"] = str(tmp_path / "data")
    if lm_studio is not None:
        env[LM_STUDIO_ENV] = lm_studio
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
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5)
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


def test_demo_fallback_serves_the_emulator(tmp_path: Path, no_lm_studio: str) -> None:
    status, err = _serve_demo(tmp_path)
    assert status == 200
    assert f"DEMO MODE: nothing answers at {no_lm_studio}" in err
    assert "UPSTREAM NOT ANSWERING" not in err


def test_lm_studio_found_means_no_demo(
    tmp_path: Path, emulator: ServerProcess, upstream: httpx.Client
) -> None:
    """Something answers where LM Studio is looked for: it becomes the upstream."""
    status, err = _serve_demo(tmp_path, lm_studio=emulator.url)
    assert status == 200
    assert "DEMO MODE" not in err and f"-> {emulator.url} " in err
    assert any(r["path"] == "/v1/models" for r in upstream_requests(upstream))


def test_explicit_upstream_disables_the_demo(tmp_path: Path) -> None:
    status, err = _serve_demo(tmp_path, "--upstream", f"http://127.0.0.1:{free_port()}")
    assert status == 503
    assert "DEMO MODE" not in err
    assert "UPSTREAM NOT ANSWERING" in err
