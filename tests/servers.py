"""Real servers for tests: the emulator and the gateway as subprocesses on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

ADMIN_KEY = "test-admin-key-0123456789"
API_KEY = "test-api-key-0123456789"
METRICS_KEY = "test-metrics-key-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any LMGATE_* setting, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    return {**env, **values}


def serve_argv(port: int, *args: str) -> list[str]:
    """The command line of `lmgate serve` on `port`."""
    return [sys.executable, "-m", "lmgate", "serve", "--port", str(port), *args]


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a child, killing it if it has not gone within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ServerProcess:
    """A child process serving HTTP; started by `start()`, killed by `stop()`."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        port: int,
        ready_path: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path
        self.env = dict(env) if env is not None else dict(os.environ)
        self.cwd = cwd
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> ServerProcess:
        if self.log_path is not None:
            with open(self.log_path, "ab") as out:  # the child keeps its own copy
                self.proc = subprocess.Popen(
                    self.args, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT
                )
        else:
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args} exited with {self.proc.returncode}: {self.logs()}")
            try:
                httpx.get(self.url + self.ready_path, timeout=0.5)
                return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.args} did not become ready: {self.logs()}")

    def logs(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def start_emulator(tmp: Path, *extra: str, name: str = "emulator") -> ServerProcess:
    port = free_port()
    return ServerProcess(
        [sys.executable, "-m", "lmgate.emulator", "--port", str(port), *extra],
        port=port,
        ready_path="/lmstudio-greeting",
        log=tmp / f"{name}-{port}.log",
    ).start()


def start_gateway(
    tmp: Path,
    upstream: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    data_dir: Path | None = None,
) -> ServerProcess:
    """`lmgate serve` with a clean environment: only the LMGATE_* values given here count."""
    port = free_port()
    data = data_dir or tmp / f"data-{port}"
    full_env = clean_env(LMGATE_DATA_DIR=str(data), **(env or {}))
    workdir = tmp / f"cwd-{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    return ServerProcess(
        serve_argv(port, "--upstream", upstream, *args),
        port=port,
        ready_path="/health",
        env=full_env,
        cwd=workdir,
        log=tmp / f"gateway-{port}.log",
    ).start()


def admin_headers(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upstream_requests(upstream: httpx.Client) -> list[dict[str, object]]:
    """What the emulator received, oldest first."""
    data = upstream.get("/__emulator/requests").json()
    items: list[dict[str, object]] = data["requests"] if isinstance(data, dict) else data
    return items


def raw_http(port: int, request: bytes, timeout: float = 5.0, source: str | None = None) -> bytes:
    """Send bytes exactly as given (no client-side path clean-up) and read the whole answer;
    from the loopback address `source` if given."""
    where = None if source is None else (source, 0)
    with socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=where
    ) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def raw_status(port: int, method: str, path: str, headers: Mapping[str, str]) -> int:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if method == "POST":
        lines.append("Content-Length: 2")
    request = ("\r\n".join(lines) + "\r\n\r\n" + ("{}" if method == "POST" else "")).encode()
    answer = raw_http(port, request)
    return int(answer.split(b" ", 2)[1])
