"""The total time a non-streaming answer may take, from the request to its last byte, as one
timer per request (a timeout context around every read cost several per cent of a request's
CPU).

Before the answer's head has come, the timer cancels the request's task, and whoever catches
the cancellation asks `ours()` whether it was the deadline's (then it is a 504) or someone
else's (a client that left); after, it resets the answer's connection, so the read in progress
fails at once and the reader asks `expired`.
"""

from __future__ import annotations

import asyncio

import aiohttp

from lmgate.upstream.pool import hang_up


class Deadline:
    __slots__ = ("_answer", "_handle", "_task", "expired", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._answer: aiohttp.ClientResponse | None = None
        self._task = asyncio.current_task()
        self._handle = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self._answer is None:
            if self._task is not None:
                self._task.cancel()
            return
        connection = self._answer.connection
        if connection is not None:  # None: read to its end already
            hang_up(connection.transport)

    def answered(self, answer: aiohttp.ClientResponse) -> None:
        """The head has come: from now on an expiry resets the connection."""
        self._answer = answer

    def ours(self) -> bool:
        """After a cancellation was caught: whether the deadline alone caused it (then it is
        undone here and the caller answers with a timeout)."""
        return self.expired and self._task is not None and self._task.uncancel() == 0

    def cancel(self) -> None:
        self._handle.cancel()
        self._answer = None
