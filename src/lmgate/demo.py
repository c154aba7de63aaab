"""Demo mode: with no LM Studio around, serve the built-in emulator as the upstream.

Only when asked (`--demo-fallback`, which `make run` passes), only when nobody chose an
upstream, and only when nothing answers on LM Studio's default address. It says so loudly.
Tests point `LM_STUDIO_ENV` at an address of their own, so that what happens to listen on
this machine's port 1234 (a real LM Studio, another emulator) cannot change their outcome.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from lmgate.redaction import redact_url
from lmgate.settings import Settings, explicit_upstream

LM_STUDIO_ENV = "_LMGATE_LM_STUDIO_URL"  # where LM Studio is looked for; tests only


def _answers(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, even if not with 200
    except (OSError, ValueError):
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def demo_upstream(settings: Settings, *, enabled: bool) -> Iterator[Settings]:
    if not enabled or explicit_upstream(settings):
        yield settings
        return
    lm_studio = os.environ.get(LM_STUDIO_ENV, "").rstrip("/") or settings.upstream_url
    if _answers(lm_studio + "/v1/models"):
        same = lm_studio == settings.upstream_url
        yield settings if same else settings.model_copy(update={"upstream": lm_studio})
        return
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmgate.emulator", "--host", "127.0.0.1", "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while not _answers(url + "/lmstudio-greeting"):
            if proc.poll() is not None or time.monotonic() > deadline:
                typer.echo(f"lmgate: the demo emulator did not start ({proc.poll()})", err=True)
                raise typer.Exit(2)
            time.sleep(0.1)
        banner = "=" * 72
        typer.echo(
            f"{banner}\nDEMO MODE: nothing answers at {redact_url(lm_studio)}, so lmgate is "
            f"serving its\nbuilt-in LM Studio emulator at {url} as the upstream. Answers are "
            f"fake.\nStart LM Studio's server (or pass --upstream URL) for real models.\n{banner}",
            err=True,
        )
        yield settings.model_copy(update={"upstream": url})
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
