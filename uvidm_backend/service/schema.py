"""The response models of the OpenAPI schema (docs/API.md). Handlers answer the store's dicts as JSON;
these classes document them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class JobModel(BaseModel):
    id: str = Field(description="random job id")
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    stage: str | None = Field(description="pipeline stage while running ('done' when finished)")
    progress: float = Field(ge=0, le=1, description="fraction of the whole job")
    queue_position: int | None = Field(description="jobs ahead of this one while queued (0: next)")
    error: str | None = Field(description="why the job failed, in words a user can act on")
    created: str = Field(description="ISO 8601, UTC")
    started: str | None = Field(description="ISO 8601, UTC")
    finished: str | None = Field(description="ISO 8601, UTC")
    photo: str = Field(description="the uploaded file's name (reduced to safe characters)")
    options: dict[str, Any] = Field(description="the generation options used (GenerateOptions)")
    files: list[str] = Field(description="output files to download (when done)")
    cancel_requested: bool = Field(description="a cancel was asked for; the job stops at its next step")


class DownloadModel(BaseModel):
    state: Literal["running", "done", "failed", "cancelled"]
    file: str | None = Field(description="the file being fetched")
    done_bytes: int
    total_bytes: int
    error: str | None = Field(description="why the download failed (finished, verified files are kept)")


class ModelsModel(BaseModel):
    state: Literal["missing", "downloading", "loading", "ready", "failed"]
    missing: list[str] = Field(description="model files not there yet (state missing or downloading)")
    download: DownloadModel | None = Field(description="the service's download of the model files, if any")
    advice: str | None = Field(None, description="what to do while files are missing")
    error: str | None = Field(description="why loading failed")
    loaded: list[str] = Field(description="the networks and data the pipeline holds")
    fast: str | None = Field(description="the GPU fast path now running: off, graph or compile (null while "
                                         "loading); `--fast auto` goes from graph to compile when compiled")
    compiling: bool = Field(description="the network is being compiled in the background; jobs get faster after")


class HealthModel(BaseModel):
    version: str
    device: str | None = Field(description="torch device the pipeline runs on")
    device_warning: str | None = Field(description="a GPU this machine has that the pipeline does not use, and why")
    models: ModelsModel
    queue_length: int = Field(description="jobs waiting (the running one not counted)")
    queue_capacity: int
    token_required: bool = Field(description="whether the other endpoints need a bearer token")


class ErrorModel(BaseModel):
    detail: str = Field(description="what went wrong and what to do about it")
    field: str | None = Field(None, description="the form field at fault (422 only)")


_WHAT = {400: "the photo cannot be read, or the body is malformed", 401: "missing or wrong token",
         403: "a Host or Origin this service does not answer to", 404: "no such job or file",
         408: "the request body did not arrive in time", 409: "the job is not finished",
         413: "the upload or the photo is too large", 415: "not an image",
         422: "bad options (the field is named)", 429: "the queue is full (see Retry-After)",
         503: "the models could not be loaded, or the service is busy decoding (see Retry-After)",
         507: "the service's disk or temporary folder is full"}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error codes a route can answer."""
    return {code: {"model": ErrorModel, "description": _WHAT[code]} for code in codes}
