"""Model downloads as LM Studio 0.4's REST v1 runs them, faked over time.

`POST /api/v1/models/download` starts a job (or answers `already_downloaded`), and
`GET /api/v1/models/download/status/{job_id}` reports it (reference §4.8). A job's bytes grow
at `EmulatorConfig.download_speed` per second; when all have arrived the model joins the
catalog as downloaded. LM Studio's REST API has no way to stop a download, so neither has
the emulator's: failing or cancelling one (as LM Studio's own downloads panel would) goes
through `/__emulator/downloads/{job_id}/fail|cancel`. A cancelled job reports `failed` with
`cancelled: true` (the REST status list has no other word for it) and its partial bytes are
dropped: the model never appears as downloaded.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lmgate.emulator.config import ModelSpec
from lmgate.emulator.inference import request_json, state_of
from lmgate.emulator.replies import EmulatorError, json_response, missing_field

_CATALOG_ID = re.compile(r"[\w.-]{1,100}/[\w.@-]{1,200}")
_QUANT = re.compile(r"[\w.-]{1,64}")
MAX_JOBS = 256


def _iso(stamp: float) -> str:
    return (
        datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


@dataclass
class DownloadJob:
    id: str
    key: str  # the model key it becomes once downloaded
    total: int
    speed: float
    started: float = field(default_factory=time.time)
    status: str = "downloading"
    completed: float | None = None
    cancelled: bool = False
    error: str | None = None
    stopped_at: int = 0  # bytes when it failed or was cancelled
    task: asyncio.Task[None] | None = None

    def downloaded(self) -> int:
        if self.status == "completed":
            return self.total
        if self.status == "failed":
            return self.stopped_at
        return min(self.total, int((time.time() - self.started) * self.speed))

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "job_id": self.id,
            "status": self.status,
            "total_size_bytes": self.total,
            "downloaded_bytes": self.downloaded(),
            "started_at": _iso(self.started),
        }
        if self.status == "downloading":
            body["bytes_per_second"] = self.speed
            left = (self.total - self.downloaded()) / self.speed if self.speed > 0 else 0.0
            body["estimated_completion"] = _iso(time.time() + left)
        if self.completed is not None:
            body["completed_at"] = _iso(self.completed)
        if self.error is not None:
            body["error"] = self.error
        if self.cancelled:
            body["cancelled"] = True
        return body


def model_key(model: str) -> str | None:
    """The key a download becomes: the catalog id itself, or a Hugging Face URL's
    `owner/repo`. None when `model` is neither."""
    if _CATALOG_ID.fullmatch(model):
        return model
    parts = urlsplit(model)
    if parts.scheme in ("http", "https") and parts.netloc.lower() in ("huggingface.co", "hf.co"):
        path = [p for p in parts.path.split("/") if p]
        if len(path) >= 2:
            return f"{path[0]}/{path[1]}"
    return None


def _find(request: Request) -> DownloadJob:
    job_id = request.path_params["job_id"]
    job = state_of(request).downloads.get(job_id)
    if job is None:
        raise EmulatorError(
            404,
            f'No download job with id "{job_id}"',
            code="job_not_found",
            v1_type="job_not_found",
        )
    return job


async def _finish(request_state: Any, job: DownloadJob) -> None:
    """Sleep for the download's time, then make the model a downloaded one."""
    left = (job.total - job.downloaded()) / job.speed if job.speed > 0 else 0.0
    await asyncio.sleep(max(0.0, left))
    job.status, job.completed = "completed", time.time()
    spec = ModelSpec(key=job.key, type="llm", max_context_length=32768, size_bytes=job.total)
    request_state.catalog.specs.setdefault(job.key, spec)


async def start(request: Request) -> Response:
    state = state_of(request)
    body = request_json(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise missing_field("model")
    quantization = body.get("quantization")
    if quantization is not None and (
        not isinstance(quantization, str) or not _QUANT.fullmatch(quantization)
    ):
        raise EmulatorError(400, "Invalid quantization", code="invalid_value", param="quantization")
    key = model_key(model)
    if key is None:
        raise EmulatorError(
            404,
            f'Model "{model[:200]}" was not found in the catalog or on Hugging Face.',
            code="model_not_found",
            param="model",
            v1_type="model_not_found",
        )
    if state.catalog.find_spec(key) is not None:
        return json_response({"status": "already_downloaded"})
    for job in state.downloads.values():
        if job.key == key and job.status == "downloading":
            return json_response(job.as_json())  # the download already under way
    config = state.config
    job = DownloadJob(
        "job_" + secrets.token_hex(5), key, config.download_size, config.download_speed
    )
    job.task = asyncio.create_task(_finish(state, job))
    state.downloads[job.id] = job
    while len(state.downloads) > MAX_JOBS:
        oldest = next(iter(state.downloads))
        _stop(state.downloads.pop(oldest), "dropped")
    answer = job.as_json()
    answer.pop("downloaded_bytes", None)  # the start answer has no progress yet
    return json_response(answer)


async def status(request: Request) -> Response:
    return json_response(_find(request).as_json())


def _stop(job: DownloadJob, error: str, *, cancelled: bool = False) -> None:
    if job.status != "downloading":
        return
    job.stopped_at = job.downloaded()
    if job.task is not None:
        job.task.cancel()
    job.status, job.error, job.cancelled = "failed", error, cancelled


async def fail(request: Request) -> Response:
    """Test hook: the download fails now (network lost, disk full)."""
    job = _find(request)
    reason = request_json(request).get("error")
    _stop(job, str(reason) if reason else "Download failed: connection reset")
    return json_response(job.as_json())


async def cancel(request: Request) -> Response:
    """Test hook: cancelled in LM Studio's own downloads panel; the partial file is gone."""
    job = _find(request)
    _stop(job, "Download cancelled", cancelled=True)
    return json_response(job.as_json())


def routes() -> list[Route]:
    return [
        Route("/api/v1/models/download", start, methods=["POST"]),
        Route("/api/v1/models/download/status/{job_id}", status, methods=["GET"]),
    ]


def hook_routes() -> list[Route]:
    return [
        Route("/__emulator/downloads/{job_id}/fail", fail, methods=["POST"]),
        Route("/__emulator/downloads/{job_id}/cancel", cancel, methods=["POST"]),
    ]
