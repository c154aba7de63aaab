"""Clients for the attack suite: chosen source addresses, raw bytes, the CLI, managed keys."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.servers import ADMIN_KEY, ServerProcess


def client_from(server: ServerProcess, source: str = "127.0.0.1", **kwargs: Any) -> httpx.Client:
    """An HTTP client whose connections come from `source` (any 127.x address works)."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=server.url, transport=transport, timeout=30, **kwargs)


def raw(
    server: ServerProcess, request: bytes, *, source: str = "127.0.0.1", wait: float = 3.0
) -> bytes:
    """Send bytes as given and read until the server closes or goes quiet."""
    with socket.create_connection(
        ("127.0.0.1", server.port), timeout=wait, source_address=(source, 0)
    ) as sock:
        sock.sendall(request)
        chunks = []
        try:
            while data := sock.recv(65536):
                chunks.append(data)
        except TimeoutError:
            pass
        return b"".join(chunks)


def statuses(answer: bytes) -> list[int]:
    """The status of every response in a (possibly pipelined) answer, framing respected."""
    found: list[int] = []
    rest = answer
    while rest.startswith(b"HTTP/1.1 "):
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        found.append(int(lines[0].split(b" ")[1]))
        fields = dict(line.lower().split(b": ", 1) for line in lines[1:] if b": " in line)
        if b"content-length" in fields:
            rest = rest[int(fields[b"content-length"]) :]
        elif fields.get(b"transfer-encoding") == b"chunked":
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0] or b"0", 16)
                rest = rest[size + 2 :]
                if size == 0:
                    break
    return found


def lmgate_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMGATE_")}
    env["LMGATE_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "lmgate", *args], env=env, capture_output=True, text=True, timeout=60
    )


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def make_key(server: ServerProcess, **spec: Any) -> str:
    resp = httpx.post(server.url + "/admin/keys", json=spec, headers=bearer(ADMIN_KEY))
    assert resp.status_code == 201, resp.text
    key: str = resp.json()["key"]
    return key
