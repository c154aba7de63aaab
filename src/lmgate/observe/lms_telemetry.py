"""Structured LM Studio telemetry: `lms log stream --json` as supervised subprocesses, and
the stats LM Studio puts in its own answers.

Two streams run when `lms` is found (`loading/lms_path.py`): `--source model --filter output`
(prediction stats: tokens/s, time to first token, token counts, stop reason; `input,output`
only with prompt logging on, so prompts are not even read otherwise) and `--source server`
(LM Studio's server log: prompt-processing progress, model loads, and every line as
`lmstudio_log`, shown by the same allowlist as the log files). `lms` is pointed at the
upstream's host and port, so it never starts LM Studio's daemon itself (without them it
wakes one). A stream that ends is started again after a growing pause; one that ends three
times in a row within seconds and without a line is given up, and for the server source the
log-file tailer (`lmstudio_logs.py`) takes over, when a log folder is configured.

`AnswerStats` publishes the stats of `/api/v1/chat` answers (and `/api/v0` ones) that pass
through the proxy, read by the usage tap, as `lmstudio_prediction_stats` with the request id.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog

from lmgate.exchange import Exchange
from lmgate.observe.answers import STATS_ATTRIBUTE
from lmgate.observe.events import EventBus
from lmgate.observe.lms_events import Clean, events_of, prediction_stats, short

log: Any = structlog.get_logger("lmgate.lms_telemetry")
LINE_LIMIT = 4 << 20  # a longer line (a huge answer) is skipped, never held whole
QUICK_EXIT_S = 10.0
GIVE_UP_AFTER = 3
FIRST_PAUSE_S = 0.5
LONGEST_PAUSE_S = 30.0


def host_args(upstream: str) -> list[str]:
    """`--host/--port` for the upstream: `lms` takes no scheme, no brackets, no IPv6 host."""
    parts = urlsplit(upstream)
    host = parts.hostname or "127.0.0.1"
    if host in ("localhost", "::1"):
        host = "127.0.0.1"
    if ":" in host:
        return []
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return ["--host", host, "--port", str(port)]


async def lines(stream: asyncio.StreamReader, limit: int = LINE_LIMIT) -> AsyncIterator[bytes]:
    """Lines as they come; one longer than `limit` is dropped as it grows, not buffered."""
    buf = bytearray()
    skipping = False
    while chunk := await stream.read(65536):
        buf += chunk
        while (end := buf.find(b"\n")) >= 0:
            line = bytes(buf[:end])
            del buf[: end + 1]
            if skipping:
                skipping = False
            elif line.strip():
                yield line
        if len(buf) > limit:
            buf.clear()
            skipping = True


class LmsStream:
    """One `lms log stream --json` process, kept running."""

    def __init__(self, argv: list[str], publish: Callable[[bytes], None], name: str) -> None:
        self.argv = argv
        self.publish = publish
        self.name = name
        self.lines = 0
        self.starts = 0
        self.running = False
        self.gave_up = False
        self.stderr: deque[str] = deque(maxlen=5)

    async def once(self) -> int:
        """Run the process until it ends; the number of lines it gave."""
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        self.starts += 1
        self.running = True
        errors = asyncio.create_task(self._drain(proc.stderr))
        given = 0
        try:
            async for line in lines(proc.stdout):
                given += 1
                self.lines += 1
                self.publish(line)
            await proc.wait()
        finally:
            self.running = False
            if proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(2):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            errors.cancel()
        return given

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        async for line in lines(stream, 1 << 16):
            self.stderr.append(line.decode("utf-8", "replace")[:300])

    async def run(self) -> None:
        """Restart after each end, pausing longer each time; give up on a stream that only
        ever fails at once."""
        quick, pause = 0, FIRST_PAUSE_S
        while True:
            started = time.monotonic()
            try:
                given = await self.once()
                failure = f"exited after {given} line(s)"
            except OSError as exc:
                given, failure = 0, f"cannot run: {exc}"
            ran = time.monotonic() - started
            quick = quick + 1 if given == 0 and ran < QUICK_EXIT_S else 0
            log.warning(
                "lms_stream_ended", source=self.name, reason=failure, stderr=list(self.stderr)
            )
            if quick >= GIVE_UP_AFTER:
                self.gave_up = True
                return
            pause = FIRST_PAUSE_S if ran >= QUICK_EXIT_S else min(pause * 2, LONGEST_PAUSE_S)
            await asyncio.sleep(pause)


class LmsTelemetry:
    """The model and server streams, and the log-file fallback for the server one."""

    def __init__(
        self,
        lms: Path,
        bus: EventBus,
        *,
        upstream: str,
        clean: Clean | None,
        fallback: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.bus = bus
        self.clean = clean
        self.fallback = fallback
        self.fell_back = False
        base = [str(lms), "log", "stream", "--json"]
        where = host_args(upstream)
        wanted = "input,output" if clean is not None else "output"
        self.model = LmsStream(
            [*base, "--source", "model", "--filter", wanted, *where], self._publish, "model"
        )
        self.server = LmsStream([*base, "--source", "server", *where], self._publish, "server")

    def _publish(self, line: bytes) -> None:
        try:
            parsed = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        for kind, data in events_of(parsed, self.clean):
            self.bus.emit(kind, {**data, "requestId": None})

    async def _server_or_files(self) -> None:
        await self.server.run()
        self.bus.publish(
            "lmstudio_telemetry",
            source="server",
            state="fallback" if self.fallback else "stopped",
            reason="`lms log stream --source server` keeps failing",
        )
        if self.fallback is not None:
            self.fell_back = True
            await self.fallback()

    async def _model(self) -> None:
        await self.model.run()
        self.bus.publish(
            "lmstudio_telemetry",
            source="model",
            state="stopped",
            reason="`lms log stream --source model` keeps failing",
        )

    async def run(self) -> None:
        await asyncio.gather(self._model(), self._server_or_files())

    def as_json(self) -> dict[str, Any]:
        return {
            stream.name: {
                "running": stream.running,
                "lines": stream.lines,
                "starts": stream.starts,
                "gaveUp": stream.gave_up,
            }
            for stream in (self.model, self.server)
        } | {"logFilesInstead": self.fell_back}


_ANSWER_STATS = {
    "tokens_per_second": "tokensPerSecond",
    "time_to_first_token_seconds": "timeToFirstTokenSeconds",
    "time_to_first_token": "timeToFirstTokenSeconds",  # REST v0's name
    "generation_time": "generationSeconds",
    "model_load_time_seconds": "modelLoadSeconds",
    "input_tokens": "promptTokens",
    "total_output_tokens": "predictedTokens",
    "reasoning_output_tokens": "reasoningTokens",
}


class AnswerStats:
    """An exchange observer: the stats an answer carried become one event, after it ended."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    def on_start(self, ex: Exchange) -> None:
        pass

    def on_finish(self, ex: Exchange) -> None:
        stats = ex.attributes.get(STATS_ATTRIBUTE)
        if not isinstance(stats, dict):
            return
        body = prediction_stats(stats, _ANSWER_STATS)
        if reason := short(stats.get("stop_reason"), 50):
            body["stopReason"] = reason
        self.bus.emit(
            "lmstudio_prediction_stats",
            {
                "requestId": ex.request_id,
                "model": ex.model,
                "endpoint": ex.endpoint,
                "origin": "answer",
                **body,
            },
        )
