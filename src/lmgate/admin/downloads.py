"""Model downloads through LM Studio 0.4's REST v1 API, followed to their end.

`POST /api/v1/models/download` starts one and `GET /api/v1/models/download/status/{job_id}`
reports it (reference §4.8). A task per download polls the status and publishes
`model_download_progress` (bytes, speed, ETA, status), then `model_download_complete` or
`model_download_failed`. Jobs live in memory: every one still running and the last
`KEEP_FINISHED` finished.

LM Studio's REST API cannot stop a download. Cancelling here therefore stops lmgate's own
part: polling ends, the job ends as `cancelled` and no event of it follows, even if LM Studio
finishes the download after all (it then appears in LM Studio's model list, as anything
downloaded in its app does). Stopping the transfer itself is done in LM Studio's downloads
panel; the answer says so (`upstreamStopped: false`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from lmgate.errors import GatewayError, NotFound, TooManyRequests, UpstreamError
from lmgate.observe.events import EventBus
from lmgate.upstream.client import UpstreamClient, UpstreamRefused
from lmgate.upstream.sync import UpstreamWatcher

log: Any = structlog.get_logger("lmgate.downloads")
KEEP_FINISHED = 50
MAX_ACTIVE = 16
MAX_POLL_FAILURES = 30  # consecutive failed status calls before a job is given up
CALL_LIMIT_S = 30.0
FINISHED = frozenset({"completed", "already_downloaded", "failed", "cancelled"})
START_PATH = "/api/v1/models/download"
CANCEL_NOTE = (
    "lmgate stopped following this download. LM Studio's API cannot stop a download, so LM "
    "Studio may still finish it: stop it in LM Studio's downloads panel if it must not."
)


class DownloadsUnsupported(GatewayError):
    status = 501
    type = "invalid_request_error"
    code = "not_implemented"


class DownloadFinished(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "download_finished"


@dataclass(slots=True)
class DownloadJob:
    id: str
    model: str
    quantization: str | None
    status: str = "starting"
    upstream_job_id: str | None = None
    total_bytes: int | None = None
    downloaded_bytes: int | None = None
    bytes_per_second: float | None = None
    eta_seconds: float | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    error: str | None = None
    message: str | None = None
    upstream: str | None = None  # with several upstreams: the one that downloads it

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def progress(self) -> float | None:
        if not self.total_bytes or self.downloaded_bytes is None:
            return None
        return round(min(1.0, self.downloaded_bytes / self.total_bytes), 4)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "quantization": self.quantization,
            "status": self.status,
            "upstreamJobId": self.upstream_job_id,
            "totalBytes": self.total_bytes,
            "downloadedBytes": self.downloaded_bytes,
            "progress": self.progress(),
            "bytesPerSecond": self.bytes_per_second,
            "etaSeconds": self.eta_seconds,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "error": self.error,
            "message": self.message,
            **({"upstream": self.upstream} if self.upstream is not None else {}),
        }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _eta(body: dict[str, Any], job: DownloadJob) -> float | None:
    """Seconds left: from LM Studio's estimated completion time, else from bytes and speed."""
    when = body.get("estimated_completion")
    if isinstance(when, str):
        try:
            return max(0.0, round(datetime.fromisoformat(when).timestamp() - time.time(), 1))
        except ValueError:
            pass
    if job.total_bytes is not None and job.downloaded_bytes is not None and job.bytes_per_second:
        return round(max(0, job.total_bytes - job.downloaded_bytes) / job.bytes_per_second, 1)
    return None


class DownloadManager:
    def __init__(
        self,
        client: UpstreamClient,
        watcher: UpstreamWatcher,
        bus: EventBus,
        *,
        poll_seconds: float = 1.0,
        keep: int = KEEP_FINISHED,
    ) -> None:
        self.client = client
        self.watcher = watcher
        self.bus = bus
        self.poll_seconds = poll_seconds
        self.keep = keep
        self.jobs: dict[str, DownloadJob] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # where each running job is followed: the upstream that downloads it
        self._sources: dict[str, tuple[UpstreamClient, UpstreamWatcher]] = {}

    def list(self) -> list[DownloadJob]:
        return list(self.jobs.values())

    def get(self, job_id: str) -> DownloadJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no download '{job_id[:100]}'", code="download_not_found")
        return job

    async def start(
        self,
        model: str,
        quantization: str | None,
        *,
        source: tuple[UpstreamClient, UpstreamWatcher] | None = None,
        upstream: str | None = None,
    ) -> DownloadJob:
        """Start a download on the upstream `source` (client and watcher; default: the
        gateway's primary), named `upstream` in the job and its events."""
        for job in self.jobs.values():  # the same download twice is one download
            same = (job.model, job.quantization, job.upstream) == (model, quantization, upstream)
            if not job.finished and same:
                return job
        client, watcher = source or (self.client, self.watcher)
        if sum(not job.finished for job in self.jobs.values()) >= MAX_ACTIVE:
            raise TooManyRequests(
                f"{MAX_ACTIVE} downloads are running; wait for one to end",
                retry_after=30,
                code="too_many_downloads",
            )
        caps = await watcher.capabilities()
        if caps.reachable and not caps.native_v1:
            raise DownloadsUnsupported(
                f"the upstream ({caps.kind}) has no model download API: downloads need LM "
                f"Studio 0.4 or later (POST {START_PATH})"
            )
        payload = {"model": model, **({"quantization": quantization} if quantization else {})}
        try:
            answer = await client.call("POST", START_PATH, payload, limit_s=CALL_LIMIT_S)
        except UpstreamRefused as exc:
            if exc.upstream_status == 200 or "unexpected endpoint" in exc.message.lower():
                raise DownloadsUnsupported(
                    f"the upstream does not offer POST {START_PATH} (LM Studio 0.4 or later "
                    "downloads models through it)"
                ) from exc
            raise
        job = DownloadJob("dl_" + secrets.token_hex(6), model, quantization, upstream=upstream)
        self.jobs[job.id] = job
        at = {"upstream": upstream} if upstream is not None else {}
        self.bus.publish("model_download_start", modelKey=model, downloadId=job.id, **at)
        self._apply(job, answer if isinstance(answer, dict) else {})
        if not job.finished:
            if job.upstream_job_id is None:
                self._end(job, "failed", error="the upstream started no download job")
            else:
                self._sources[job.id] = (client, watcher)
                self._tasks[job.id] = asyncio.create_task(self._follow(job))
        self._prune()
        return job

    def cancel(self, job_id: str) -> DownloadJob:
        job = self.get(job_id)
        if job.finished:
            raise DownloadFinished(f"download '{job.id}' already ended: {job.status}")
        task = self._tasks.pop(job.id, None)
        if task is not None:
            task.cancel()
        self._sources.pop(job.id, None)
        job.message = CANCEL_NOTE
        self._end(job, "cancelled")
        return job

    def _apply(self, job: DownloadJob, body: dict[str, Any]) -> None:
        """Take what one answer of LM Studio says; publish the end when it is one."""
        if isinstance(body.get("job_id"), str):
            job.upstream_job_id = body["job_id"][:200]
        for name, attr in (("total_size_bytes", "total_bytes"), ("downloaded_bytes", None)):
            value = _number(body.get(name))
            if value is not None:
                setattr(job, attr or name, int(value))
        job.bytes_per_second = _number(body.get("bytes_per_second"))
        status = body.get("status")
        if status in ("completed", "already_downloaded"):
            if job.total_bytes is not None:
                job.downloaded_bytes = job.total_bytes
            self._end(job, str(status))
        elif status == "failed":
            reason = body.get("error") or body.get("message") or "LM Studio reports it failed"
            self._end(job, "failed", error=str(reason)[:300])
        elif status in ("downloading", "paused"):
            job.status = str(status)
            job.eta_seconds = _eta(body, job) if status == "downloading" else None
        else:
            self._end(job, "failed", error=f"unexpected download status {str(status)[:50]!r}")

    def _end(self, job: DownloadJob, status: str, *, error: str | None = None) -> None:
        job.status, job.error, job.finished_at = status, error, time.time()
        job.bytes_per_second = job.eta_seconds = None
        kind = {"failed": "failed", "cancelled": "cancelled"}.get(status, "complete")
        self.bus.publish(f"model_download_{kind}", modelKey=job.model, **self._fields(job))
        self._prune()

    def _fields(self, job: DownloadJob) -> dict[str, Any]:
        body = job.as_json()
        return {"downloadId": body.pop("id"), **body}

    async def _follow(self, job: DownloadJob) -> None:
        """Poll the upstream that runs the download until it ends (or lmgate is told to stop
        following it)."""
        client, watcher = self._sources.get(job.id, (self.client, self.watcher))
        path = f"{START_PATH}/status/{job.upstream_job_id}"
        failures = 0
        try:
            while not job.finished:
                await asyncio.sleep(self.poll_seconds)
                try:
                    body = await client.call("GET", path, limit_s=CALL_LIMIT_S)
                except UpstreamRefused as exc:
                    self._end(job, "failed", error=f"LM Studio: {exc.message[:300]}")
                    break
                except UpstreamError as exc:
                    failures += 1
                    if failures >= MAX_POLL_FAILURES:
                        self._end(job, "failed", error=f"lost track of it: {exc.message[:300]}")
                    continue
                failures = 0
                self._apply(job, body if isinstance(body, dict) else {})
                if not job.finished:
                    self.bus.publish(
                        "model_download_progress", modelKey=job.model, **self._fields(job)
                    )
            if job.status == "completed":
                await self._refresh(watcher)
        finally:
            self._tasks.pop(job.id, None)
            self._sources.pop(job.id, None)

    async def _refresh(self, watcher: UpstreamWatcher) -> None:
        """A finished download is a new model: show it in the model list at once."""
        try:
            await watcher.poll()
        except GatewayError as exc:
            log.warning("model_list_refresh_failed", error=exc.message)

    def _prune(self) -> None:
        finished = [job_id for job_id, job in self.jobs.items() if job.finished]
        for job_id in finished[: max(0, len(finished) - self.keep)]:
            del self.jobs[job_id]

    async def run(self) -> None:
        """Lives as long as the gateway; at shutdown, stops following every download."""
        try:
            await asyncio.Event().wait()
        finally:
            for task in list(self._tasks.values()):
                task.cancel()
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
