"""`/admin/models/download(s)`: start, follow and cancel model downloads (admin scope only).

With several upstreams a download runs on the one named (`"upstream": NAME`), else on one
that can download (`upstreams.management.download_target`); its job names it, and its status
is read from it.

With several workers each one follows the downloads it started: the list, and a cancel, go
to the worker that answers.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field, model_validator

from lmgate import params
from lmgate.admin.downloads import DownloadManager
from lmgate.admin.schemas import Schema
from lmgate.errors import GatewayError
from lmgate.gateway import gateway_of
from lmgate.upstreams.management import download_target

router = APIRouter(prefix="/admin/models", tags=["admin"])
_CATALOG_ID = re.compile(r"[\w.-]{1,100}/[\w.@-]{1,200}")
_URL = re.compile(r"https?://[^\s\x00-\x1f\x7f]{1,1000}", re.IGNORECASE)


class DownloadRequest(Schema):
    """A catalog id (`publisher/name`) or a Hugging Face URL; `modelKey` is read as `model`."""

    model: str | None = Field(None, min_length=1, max_length=1024)
    model_key: str | None = Field(None, min_length=1, max_length=1024)
    quantization: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    upstream: str | None = Field(None, max_length=63)  # None: one that can download

    @model_validator(mode="after")
    def _one_model(self) -> DownloadRequest:
        if (self.model is None) == (self.model_key is None):
            raise ValueError("give the model to download as 'model' (or 'modelKey')")
        name = self.model or self.model_key or ""
        if not (_CATALOG_ID.fullmatch(name) or _URL.fullmatch(name)):
            raise ValueError(
                "model must be a catalog id such as 'qwen/qwen3-4b' or a Hugging Face URL"
            )
        self.model = name
        return self


def _manager(request: Request) -> DownloadManager:
    manager = gateway_of(request).downloads
    if manager is None:
        raise GatewayError("downloads are not set up in this gateway")
    return manager


@router.post("/download")
async def start(body: DownloadRequest, request: Request) -> dict[str, Any]:
    assert body.model is not None
    manager = _manager(request)
    ups = gateway_of(request).upstreams
    member = download_target(ups, body.upstream)
    job = await manager.start(
        body.model,
        body.quantization,
        source=(member.client, member.watcher),
        upstream=member.name if ups.routed else None,
    )
    return job.as_json()


@router.get("/downloads")
async def listing(request: Request) -> dict[str, Any]:
    jobs = _manager(request).list()
    return {"downloads": [job.as_json() for job in reversed(jobs)]}


@router.get("/downloads/{download_id}")
async def one(download_id: str, request: Request) -> dict[str, Any]:
    params.text(download_id, "download_id", limit=64)
    return _manager(request).get(download_id).as_json()


@router.delete("/downloads/{download_id}")
async def cancel(download_id: str, request: Request) -> dict[str, Any]:
    params.text(download_id, "download_id", limit=64)
    job = _manager(request).cancel(download_id)
    return {**job.as_json(), "upstreamStopped": False}


@router.post("/downloads/{download_id}/cancel")
async def cancel_post(download_id: str, request: Request) -> dict[str, Any]:
    return await cancel(download_id, request)
