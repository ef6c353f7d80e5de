"""The model files, fetched by the service: plan, start, follow and cancel a download (docs/API.md "Model files").

The token rules of every other endpoint apply. While files are missing, jobs answer 503 and health says
`models.state: "missing"` with the files and what to do; the download runs in the background and the
models load when it ends, without a restart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from uvidm_backend.model_files.sources import ModelSourceError
from uvidm_backend.service.context import Service, service
from uvidm_backend.service.model_download import DownloadRunning, ModelDownloads
from uvidm_backend.service.routes.auth import GUARDED

router = APIRouter(tags=["models"], dependencies=GUARDED)
Context = Annotated[Service, Depends(service)]
REVISION = Field("main", min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._/-]+$",
                 description="branch, tag or commit of the hub repository")
EVENT_WAIT_S = 0.5


class DownloadRequest(BaseModel):
    accept_licences: bool = Field(False, description="true: you accept the model files' licences (GET /v1/models/plan)")
    revision: str = REVISION
    full_head: bool = Field(False, description="also the ICT FaceKit full head (MIT)")


def downloads_of(context: Service) -> ModelDownloads:
    if context.downloads is None:
        raise HTTPException(404, "this service was started with a fixed model, it downloads no model files")
    return context.downloads


@router.get("/v1/models/plan", summary="What a download would fetch, with sizes and the licences to accept")
async def plan(context: Context, revision: Annotated[str, REVISION] = "main", full_head: bool = False) -> JSONResponse:
    downloads = downloads_of(context)
    try:
        return JSONResponse(await run_in_threadpool(downloads.plan, revision, full_head))
    except ModelSourceError as error:
        raise HTTPException(502, str(error)) from error


@router.post("/v1/models/download", status_code=202, summary="Download the model files in the background")
async def start(context: Context, body: DownloadRequest) -> JSONResponse:
    downloads = downloads_of(context)
    if not body.accept_licences:
        raise HTTPException(422, "accept_licences must be true: read the licences (GET /v1/models/plan) first")
    try:
        downloads.start(body.revision, full_head=body.full_head)
    except DownloadRunning as error:
        raise HTTPException(409, str(error)) from error
    return JSONResponse(downloads.status(), status_code=202)


@router.delete("/v1/models/download", status_code=202, summary="Cancel the running download")
async def cancel(context: Context) -> JSONResponse:
    downloads = downloads_of(context)
    if not downloads.cancel():
        raise HTTPException(409, "no download is running")
    return JSONResponse(downloads.status(), status_code=202)


@router.get("/v1/models/events", summary="The download's progress as server-sent events, ending with `end`")
async def events(context: Context, request: Request) -> StreamingResponse:
    downloads = downloads_of(context)

    async def stream() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        version = -1
        while True:
            status = await run_in_threadpool(downloads.wait_change, version, EVENT_WAIT_S)
            if status is not None and status.version != version:
                version = status.version
                yield f"data: {json.dumps(downloads.status())}\n\n"
                if status.state != "running":
                    yield f"event: end\ndata: {json.dumps(downloads.status())}\n\n"
                    return
            elif status is None:
                yield "event: end\ndata: null\n\n"
                return
            if context.stopping.is_set() or await request.is_disconnected():
                yield f"event: end\ndata: {json.dumps(downloads.status())}\n\n"
                return
            await asyncio.sleep(0)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
