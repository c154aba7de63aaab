"""What the llama.cpp server reports about itself: the ground truth the tests compare with.

`/slots` shows, per slot, whether it is generating and the sampling parameters of the last
task it ran, so it tells what actually reached the server rather than what lmgate meant to
send. `/metrics` counts every token generated, including those of abandoned requests.
The kernel's socket table shows which of the server's connections its peer has closed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx


def slots(base_url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (
        httpx.get(base_url + "/slots", timeout=10).raise_for_status().json()
    )
    return found


def busy_slots(base_url: str) -> int:
    return sum(1 for slot in slots(base_url) if slot["is_processing"])


def last_task_params(base_url: str) -> dict[str, Any]:
    """Sampling parameters of the most recent task any slot ran (task ids only grow)."""
    used = [slot for slot in slots(base_url) if "id_task" in slot and "params" in slot]
    assert used, "no slot has run a task yet"
    params: dict[str, Any] = max(used, key=lambda slot: slot["id_task"])["params"]
    return params


def metric(base_url: str, name: str) -> float:
    """One of the server's own `/metrics` figures (`llamacpp:NAME`)."""
    text = httpx.get(base_url + "/metrics", timeout=10).raise_for_status().text
    for line in text.splitlines():
        if line.startswith(f"llamacpp:{name} "):
            return float(line.split()[1])
    raise AssertionError(f"/metrics has no llamacpp:{name}")


def tokens_predicted(base_url: str) -> float:
    """The server's running count of generated tokens."""
    return metric(base_url, "tokens_predicted_total")


def deferred(base_url: str) -> int:
    """Requests the server holds back now because every slot is taken."""
    return int(metric(base_url, "requests_deferred"))


def wait_idle(base_url: str, timeout: float) -> bool:
    """Whether every slot stopped generating within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while busy_slots(base_url):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


_CLOSE_WAIT = "08"


def hung_up_on(port: int) -> set[str]:
    """The server's connections whose peer has closed while the server has not (CLOSE_WAIT),
    by socket inode; empty where the kernel's table cannot be read (not Linux)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == _CLOSE_WAIT:
                found.add(fields[9])
    return found
