"""Shared by the observability tests: a `/debug/stream` reader and a polling wait."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx

from tests.servers import admin_headers

T = TypeVar("T")


class EventReader:
    """Reads `/debug/stream` in a thread; queues (event, data) pairs and comment lines."""

    def __init__(self, url: str, query: str = "", headers: Mapping[str, str] | None = None):
        self.items: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.comments: queue.Queue[str] = queue.Queue()
        self.status: int | None = None
        self._client = httpx.Client(timeout=None)
        self._url = url + "/debug/stream" + query
        self._headers = {**admin_headers(), **(headers or {})}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        event = "message"
        try:
            with self._client.stream("GET", self._url, headers=self._headers) as resp:
                self.status = resp.status_code
                for line in resp.iter_lines():
                    if line.startswith(":"):
                        self.comments.put(line)
                    elif line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        self.items.put((event, json.loads(line[6:])))
        except httpx.HTTPError:
            pass

    def next(self, wanted: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next event of type `wanted`; others before it are skipped."""
        while True:
            event, data = self.items.get(timeout=timeout)
            if event == wanted:
                return data

    def until(self, wanted: str, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            data = self.next(wanted)
            if match(data):
                return data

    def drain(self, quiet: float = 0.5) -> list[tuple[str, dict[str, Any]]]:
        """Everything that arrives until nothing has for `quiet` seconds."""
        found = []
        while True:
            try:
                found.append(self.items.get(timeout=quiet))
            except queue.Empty:
                return found

    def close(self) -> None:
        self._client.close()


def eventually(probe: Callable[[], T | None], timeout: float = 10.0) -> T:
    """Poll until `probe` returns something truthy (state that settles after a response)."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError("the expected state never came")
        time.sleep(0.05)
