"""The only code that talks to the upstream. Transport failures become GatewayErrors here, once.

One pooled aiohttp session lives for the app's lifetime. Bodies are relayed as bytes, never
decompressed or re-encoded, so what the client receives is what the upstream sent.

Every wait on the upstream is bounded: the connect (`connect_timeout`), taking the request
body (`send_timeout`), a non-streaming answer from the request to its last byte
(`request_timeout`, a total), and each silence inside a stream (`stream_timeout`, idle). A
request whose answer is given up on, for any reason, has its connection closed at once, and
reset when anything is still queued for the upstream (`pool.hang_up`).

Nothing is sent twice: a request that may have reached the upstream is never repeated here.
aiohttp repeats an idempotent one (GET, HEAD...) once on a connection that failed; a POST, which
starts a generation, gets a 502 instead. Pooled connections the upstream had closed are
dropped before anything is written on them, and one that closes its connections after
streams (llama.cpp) is learned (`pool.CheckedConnector`): such servers cost no failures.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

from lmgate.errors import GatewayError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from lmgate.redaction import redact_url, scrub_urls, upstream_named
from lmgate.settings import Settings
from lmgate.upstream.bounded import AnswerTooLarge, read_bounded
from lmgate.upstream.deadline import Deadline
from lmgate.upstream.pool import connector, hang_up
from lmgate.upstream.upload import Upload

_SKIP_AUTO = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    _raw: aiohttp.ClientResponse
    _describe: str
    # A non-streaming answer must be whole within the `deadline`'s time; a stream the request
    # did not announce (found by its content type) may be silent for `idle` seconds at most.
    # Neither: aiohttp's own idle timer, set for declared streams, is all there is.
    deadline: Deadline | None = None
    idle: float | None = None
    # Known for an answer to a request that did not ask for a stream: whether it is SSE anyway
    # (read once here, for the timeouts and for the relay alike).
    event_stream: bool = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """Bytes as they arrive: no coalescing, no waiting for a full buffer."""
        content = self._raw.content
        try:
            if self.idle is None:
                async for chunk in content.iter_any():
                    yield chunk
                return
            while chunk := await self._next(content):
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"{self._describe} went silent mid-response") from exc
        except aiohttp.ClientError as exc:
            if self.deadline is not None and self.deadline.expired:
                raise UpstreamTimeout(
                    f"{self._describe} did not finish its answer within {self.deadline.seconds:g} s"
                ) from exc
            raise UpstreamError(
                f"{self._describe} failed mid-response: {scrub_urls(str(exc))}"
            ) from exc

    async def _next(self, content: aiohttp.StreamReader) -> bytes:
        async with asyncio.timeout(self.idle):
            return await content.readany()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def abort(self) -> None:
        """Give up on the answer: close its connection now (`hang_up`), unless it is back in
        the pool, the answer read to its end."""
        connection = self._raw.connection
        if connection is not None:
            hang_up(connection.transport)
        self._raw.close()


def is_event_stream(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    return any(k == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers)


@contextmanager
def translated(describe: str, timeout_text: str) -> Iterator[None]:
    """aiohttp's exceptions become the gateway's: 503 unreachable, 504 timeout, 502 other."""
    try:
        yield
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamUnavailable(f"{describe} is unreachable: {_reason(exc)}") from exc
    except aiohttp.ConnectionTimeoutError as exc:
        raise UpstreamTimeout(f"{describe} did not accept a connection in time") from exc
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(f"{describe} {timeout_text}") from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise UpstreamError(f"{describe} closed the connection without answering") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"{describe} failed: {scrub_urls(str(exc))}") from exc


def _reason(exc: aiohttp.ClientConnectorError) -> str:
    """Why a connection failed, without the address (asyncio's text quotes it)."""
    errno = exc.os_error.errno
    return os.strerror(errno) if errno and errno > 0 else type(exc.os_error).__name__


def error_reason(body: Any) -> str | None:
    """The message of any of LM Studio's error shapes, or None when `body` is not an error."""
    if not isinstance(body, dict) or "error" not in body:
        return None
    error = body["error"]
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)
    return str(error)


class UpstreamRefused(UpstreamError):
    """The upstream answered with an error of its own; status and reason are relayed."""

    def __init__(self, status: int, reason: str, body: Any) -> None:
        super().__init__(reason, code=_code_of(body) or "upstream_refused")
        # A client error keeps its status; the upstream's own failures (and LM Studio's
        # "200 with an error" for unknown endpoints) become 502 Bad Gateway.
        self.status = status if 400 <= status < 500 else 502
        self.upstream_status = status
        self.type = "invalid_request_error" if 400 <= status < 500 else "upstream_error"
        self.body_json = body


def _code_of(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return str(error["code"])
    return None


@dataclass(frozen=True, slots=True)
class Probe:
    """The outcome of a call lmgate makes on its own account."""

    ok: bool
    status: int
    body: Any
    latency_ms: float
    error: str | None = None


class UpstreamClient:
    def __init__(self, settings: Settings) -> None:
        self.base = settings.upstream_url
        self.connect_timeout = settings.connect_timeout
        self.request_timeout = settings.request_timeout
        self.stream_timeout = settings.stream_timeout
        self.send_timeout = settings.send_timeout
        token = settings.upstream_token
        self.auth_header = (
            ("Authorization", f"Bearer {token.get_secret_value()}") if token else None
        )
        self._session: aiohttp.ClientSession | None = None
        self.active = 0  # answers under way (`open`): a retired client closes once none are
        self._shown = redact_url(self.base)  # in errors, and only for the operator's requests
        # Built once: the proxy sends every request with one of these two. A stream's silence
        # is aiohttp's read timer; a plain answer's total is our own deadline (`open`).
        self._timeouts = {
            streaming: aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.connect_timeout,
                sock_read=self.stream_timeout if streaming else None,
            )
            for streaming in (False, True)
        }
        total = self.request_timeout
        self._waited = {
            True: "did not answer in time",
            False: f"did not answer within {total:g} s" if total else "did not answer in time",
        }

    async def start(self) -> None:
        self.start_now()

    def start_now(self) -> None:
        """`start` without an await, for an upstream added from synchronous code."""
        self._session = aiohttp.ClientSession(
            # LM Studio's server (Node) closes a connection idle for 5 s: one idle for 4 s is
            # not taken again, rather than risk writing a request as the upstream closes it.
            connector=connector(keepalive_timeout=4),
            # A gateway keeps no cookies: one client's must never be sent for another.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO,
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise GatewayError("upstream client is not started")
        return self._session

    async def _send(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: Upload | None,
        streaming: bool,
    ) -> aiohttp.ClientResponse:
        return await self.session.request(
            method,
            URL(self.base + target, encoded=True),
            headers=list(headers),
            data=body,
            timeout=self._timeouts[streaming],
            allow_redirects=False,
        )

    @asynccontextmanager
    async def open(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        *,
        streaming: bool = False,
    ) -> AsyncIterator[UpstreamResponse]:
        """Send a request; when the block exits, an answer not read to its end is given up on
        and its connection closed at once, so the upstream stops generating."""
        describe = upstream_named(self._shown)
        total = None if streaming else self.request_timeout
        deadline = None if total is None else Deadline(total)
        upload = Upload(body, self.send_timeout, streaming=streaming) if body else None
        del body  # held by `upload` until it is sent, and not a moment longer
        self.active += 1
        try:
            with translated(describe, self._waited[streaming]):
                raw = await self._send(method, target, headers, upload, streaming)
        except BaseException as exc:
            self.active -= 1
            if upload is not None:
                upload.abort()  # what the upstream has not read yet is dropped, not queued
            if deadline is not None:
                deadline.cancel()
                if isinstance(exc, asyncio.CancelledError) and deadline.ours():
                    raise UpstreamTimeout(f"{describe} {self._waited[False]}") from None
            if upload is not None and upload.timed_out:
                raise UpstreamTimeout(
                    f"{describe} did not take the request body within {self.send_timeout:g} s"
                ) from exc
            raise
        del headers, upload  # sent; not kept for as long as the answer takes
        answer = UpstreamResponse(
            raw.status, [(k.lower(), v) for k, v in raw.raw_headers], raw, describe
        )
        if not streaming:
            answer.event_stream = is_event_stream(answer.headers)
        if deadline is not None:
            if answer.event_stream:  # a stream after all: silences are what count
                deadline.cancel()
                answer.idle = self.stream_timeout
            else:
                deadline.answered(raw)
                answer.deadline = deadline
        try:
            yield answer
        finally:
            self.active -= 1
            if deadline is not None:
                deadline.cancel()
            answer.abort()  # a no-op for a finished answer, its connection back in the pool

    async def call(
        self, method: str, path: str, payload: dict[str, Any] | None = None, *, limit_s: float
    ) -> Any:
        """A JSON call on lmgate's own account (model management). Any error answer — including
        LM Studio's HTTP 200 with an `error` body — raises `UpstreamRefused` with its reason."""
        describe = upstream_named(self._shown)
        headers = [("Content-Type", "application/json")]
        if self.auth_header:
            headers.append(self.auth_header)
        with translated(describe, f"did not answer {method} {path} in time"):
            async with self.session.request(
                method,
                URL(self.base + path, encoded=True),
                headers=headers,
                data=orjson.dumps(payload) if payload is not None else None,
                timeout=aiohttp.ClientTimeout(total=limit_s, sock_connect=self.connect_timeout),
            ) as resp:
                raw = await read_bounded(resp, f"{method} {path}")
                status = resp.status
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"{describe} answered {method} {path} with non-JSON") from exc
        reason = error_reason(body)
        if reason is not None or status >= 400:
            raise UpstreamRefused(status, reason or f"HTTP {status}", body)
        return body

    async def probe(self, path: str, *, limit_s: float = 5.0) -> Probe:
        """GET `path` on our own account. LM Studio answers unknown paths with HTTP 200 and an
        `error` body, so such a body counts as a failure."""
        started = time.perf_counter()
        headers = [self.auth_header] if self.auth_header else []
        status = 0
        try:
            async with self.session.get(
                URL(self.base + path, encoded=True),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=limit_s),
            ) as resp:
                status = resp.status
                raw = await read_bounded(resp, f"GET {path}")
        except AnswerTooLarge as exc:
            elapsed = (time.perf_counter() - started) * 1000.0
            return Probe(False, status, None, elapsed, exc.message)
        except (TimeoutError, aiohttp.ClientError) as exc:
            elapsed = (time.perf_counter() - started) * 1000.0
            return Probe(False, 0, None, elapsed, scrub_urls(f"{type(exc).__name__}: {exc}"))
        elapsed = (time.perf_counter() - started) * 1000.0
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return Probe(False, status, None, elapsed, "answer is not JSON")
        if isinstance(body, dict) and "error" in body:
            return Probe(False, status, body, elapsed, str(body["error"])[:300])
        return Probe(200 <= status < 300, status, body, elapsed, None)
