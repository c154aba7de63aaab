"""While a streaming request waits in the queue: comment lines that tell its client where it
stands (`: queued position=N eta_ms=M`), which every SSE client skips.

Headers alone would say so only once the answer comes; a client (or a proxy in between) that
hears nothing for minutes may give up. After `EARLY_AFTER_S` of waiting the answer starts (200,
an event stream, `X-Queue-Position`), and a comment follows at once, whenever the position
changes and at least every `HEARTBEAT_S`. Only a request that is still waiting pays for this:
one timer at a time in its own task, never a task of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from lmgate.hooks import EarlyAnswer, ProxyRequest
from lmgate.schedule.types import Admit, QueueInfo, Reject

EARLY_AFTER_S = 1.0  # a wait shorter than this changes nothing for the client
HEARTBEAT_S = 2.0  # a comment at least this often, even when nothing moved
POLL_S = 0.5  # how often the position is read for changes
OPT_OUT_HEADER = b"x-lmgate-queue-comments"
_OFF = frozenset((b"off", b"false", b"no", b"0"))


def comment(info: QueueInfo) -> bytes:
    return b": queued position=%d eta_ms=%d\n\n" % (info.position, info.eta_ms)


def wants_comments(request: ProxyRequest) -> EarlyAnswer | None:
    """The answer to start early, unless the request is not a stream or its client said
    `X-Lmgate-Queue-Comments: off`."""
    early = request.early
    if early is None:
        return None
    if _opted_out(request.scope["headers"]):
        return None
    return early


def _opted_out(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == OPT_OUT_HEADER:
            return value.strip().lower() in _OFF
    return False


async def wait_announcing(
    verdict: asyncio.Future[Admit | Reject],
    early: EarlyAnswer,
    where: Callable[[], QueueInfo | None],
    *,
    after: float = EARLY_AFTER_S,
) -> Admit | Reject:
    """Await `verdict`; if it takes longer than `after`, start the answer and keep the client
    told. `where` reads the request's place now (None once it left the queue)."""
    loop = asyncio.get_running_loop()
    done, _ = await asyncio.wait((verdict,), timeout=after)
    if done:
        return verdict.result()
    info = where()
    if info is None:  # left the queue this very moment: its verdict is on its way
        return await verdict
    if not early.started:  # it may have started while the upstream woke (`upstream.wake`)
        await early.start([(b"x-queue-position", str(info.position).encode())])
    await early.write(comment(info))
    told, told_at = info, loop.time()
    while True:
        done, _ = await asyncio.wait((verdict,), timeout=POLL_S)
        if done:
            return verdict.result()
        info = where()
        now = loop.time()
        if info is not None and (info.position != told.position or now - told_at >= HEARTBEAT_S):
            await early.write(comment(info))
            told, told_at = info, now
