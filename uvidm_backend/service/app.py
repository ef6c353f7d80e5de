"""The HTTP API of docs/API.md: `create_app(settings, runner)` builds the FastAPI application.

The runner (uvidm_backend.pipeline.Pipeline, or anything with `generate_to_folder` and `describe`)
is injected; a worker.ModelHolder can stand in for one that is still loading. Handlers never run
the pipeline: they check the input, store the upload and answer; the one worker thread runs jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import secrets
import time
import warnings
import zipfile
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uvidm_backend import __version__
from uvidm_backend.devices import gpu_warning
from uvidm_backend.pipeline.errors import InputError
from uvidm_backend.pipeline.images import load_photo, readable_formats
from uvidm_backend.pipeline.options import GenerateOptions
from uvidm_backend.service.faces_route import add_faces_route
from uvidm_backend.service.jobs import SERVED_FILES, JobStore, QueueFull, safe_file_name, valid_job_id
from uvidm_backend.service.settings import ServiceSettings
from uvidm_backend.service.worker import Cleaner, ModelHolder, Runner, Worker

log = logging.getLogger(__name__)

# Pillow format → extension of the stored upload (the format is sniffed from the content, never the name).
PHOTO_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "AVIF": "avif", "HEIF": "heic",
                    "TIFF": "tif", "BMP": "bmp", "GIF": "gif", "PPM": "ppm", "JPEG2000": "jp2"}
MEDIA_TYPES = {".glb": "model/gltf-binary", ".obj": "model/obj", ".mtl": "model/mtl", ".png": "image/png",
               ".json": "application/json"}
OPEN_PATHS = ("/v1/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
FORM_SLACK = 256 * 1024  # multipart boundaries and the option fields on top of the photo
SSE_POLL_S = 0.2
# Module level: handlers' annotations are strings (PEP 563), resolved in this module's namespace.
BEARER = HTTPBearer(auto_error=False, description="the token the service was started with")
SSE_KEEPALIVE_S = 15.0

DESCRIPTION = """
Turns one photo of a face into a textured 3D head (UV-IDM). Submit a photo with `POST /v1/jobs`,
follow the job with `GET /v1/jobs/{id}` or the event stream `GET /v1/jobs/{id}/events`, then
download the files or the whole folder as a zip. Jobs run one at a time; results are kept for a
limited time (see the service's `--keep-hours`). When the service was started with a token, every
endpoint except `/v1/health` needs `Authorization: Bearer <token>`.
"""


# -- schema -------------------------------------------------------------------------------------------
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


class ModelsModel(BaseModel):
    state: Literal["loading", "ready", "failed"]
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


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {400: "the photo cannot be read", 401: "missing or wrong token", 404: "no such job or file",
            409: "the job is not finished", 413: "the upload or the photo is too large",
            415: "not an image", 422: "bad options", 429: "the queue is full (see Retry-After)",
            503: "the models could not be loaded"}
    return {code: {"model": ErrorModel, "description": what[code]} for code in codes}


# -- middleware ---------------------------------------------------------------------------------------
class UploadLimit:
    """413 for request bodies over the limit, decided from Content-Length before anything is parsed.

    The rest of an oversized body is read and dropped (up to a bound), so a client that sends the
    whole upload before reading the answer gets the 413 rather than a reset connection.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, photo_limit: int, drain_limit: int = 256 * 1024 * 1024):
        self.app = app
        self.max_bytes = max_bytes
        self.drain_limit = drain_limit
        self.message = (f"the upload is larger than the limit of {photo_limit / 1024 / 1024:.0f} MB: send a smaller "
                        "photo (downscale it, or save it as JPEG)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._drain(receive)
            await JSONResponse({"detail": self.message}, status_code=413, headers={"Connection": "close"})(
                scope, receive, send)
            return
        total = 0

        async def counted() -> Message:  # for bodies without (or lying about) Content-Length
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_bytes:
                    raise HTTPException(413, self.message)  # FastAPI passes HTTPExceptions out of body parsing
            return message

        await self.app(scope, counted, send)

    async def _drain(self, receive: Receive) -> None:
        drained = 0
        while drained <= self.drain_limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


class TokenCheck:
    """With a token configured, refuses requests without `Authorization: Bearer <token>` before reading bodies."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if not token_matches(dict(scope["headers"]).get(b"authorization"), self.token):
            await _unauthorized()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def token_matches(header: bytes | None, token: bytes) -> bool:
    if header is None:
        return False
    scheme, _, value = header.partition(b" ")
    return scheme.lower() == b"bearer" and secrets.compare_digest(value.strip(), token)


def _unauthorized() -> JSONResponse:
    return JSONResponse({"detail": "missing or wrong token: send 'Authorization: Bearer <token>' with the token "
                                   "the service was started with (--token or $UVIDM_TOKEN)"},
                        status_code=401, headers={"WWW-Authenticate": "Bearer"})


# -- input checks -------------------------------------------------------------------------------------
class PhotoRejected(Exception):
    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def check_photo(data: bytes, max_pixels: int) -> str:
    """Refuses now, with a status, what the job would fail on minutes later: the type is sniffed from the
    content, the size read from the header before any pixel is decoded, then the photo loader decodes it
    (truncated files, odd modes). Returns the file extension to store the upload under."""
    if not data:
        raise PhotoRejected(400, "the photo is empty (0 bytes): choose the image file again")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=readable_formats()) as image:
                width, height = image.size
                kind = image.format or ""
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise PhotoRejected(413, f"the photo has too many pixels ({error}): scale it down to at most "
                                     f"{max_pixels / 1e6:g} megapixels") from None
        except UnidentifiedImageError:
            raise PhotoRejected(415, _loader_message(data, max_pixels)) from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise PhotoRejected(400, f"the photo is damaged or truncated ({error}): export it again") from None
    if width * height > max_pixels:
        raise PhotoRejected(413, f"the photo is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), "
                                 f"more than the {max_pixels / 1e6:g} megapixels allowed: scale it down")
    try:
        load_photo(data, max_pixels=max_pixels)
    except InputError as error:
        raise PhotoRejected(400, str(error)) from None
    return PHOTO_EXTENSIONS.get(kind, kind.lower() or "img")


def _loader_message(data: bytes, max_pixels: int) -> str:
    """The photo loader's words for a file it cannot read (it knows HEIC and the formats installed)."""
    try:
        load_photo(data, max_pixels=max_pixels)
    except InputError as error:
        return str(error)
    return "the upload is not an image this service reads: choose a photo file (JPEG or PNG)"


def parse_landmarks(text: str | None) -> tuple[tuple[float, float], ...] | None:
    if text is None or not text.strip():
        return None
    try:
        points = json.loads(text)
        if not isinstance(points, list):
            raise ValueError
        parsed = tuple((float(x), float(y)) for x, y in points)
    except (ValueError, TypeError) as error:
        raise InputError("landmarks must be JSON like [[x, y], ...]: five points in photo pixels (eyes, nose tip, "
                         "mouth corners) or 68 in the iBUG-300W order") from error
    return parsed


def _message(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path"))
        if item.get("type") == "missing":
            parts.append(f"{field or 'a field'} is required")
        else:
            parts.append(f"{field}: {item.get('msg')} (got {item.get('input')!r})" if field else str(item.get("msg")))
    return "; ".join(parts) or "invalid request"


# -- the application ----------------------------------------------------------------------------------
def create_app(settings: ServiceSettings, runner: Runner | ModelHolder) -> FastAPI:
    """The FastAPI application; its lifespan recovers the jobs folder and starts the worker and the cleaner."""
    models = runner if isinstance(runner, ModelHolder) else ModelHolder(runner=runner)
    store = JobStore(settings.jobs_dir, settings.queue_capacity, settings.keep_hours)
    worker = Worker(store, models)
    cleaner = Cleaner(store, settings.cleanup_interval_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(store.recover)
        models.start()
        worker.start()
        cleaner.start()
        log.info("jobs folder %s, queue capacity %d", settings.jobs_dir, settings.queue_capacity)
        try:
            yield
        finally:
            await run_in_threadpool(worker.stop)
            await run_in_threadpool(cleaner.stop)

    app = FastAPI(title="UV-IDM backend", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.store, app.state.models, app.state.worker = store, models, worker
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes + FORM_SLACK,
                       photo_limit=settings.max_upload_bytes)
    app.add_middleware(TokenCheck, token=settings.token)  # added last: runs first
    async def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        # TokenCheck has already refused; this documents the scheme in the schema and guards mounted copies.
        if settings.token is not None and (
                credentials is None or not token_matches(f"Bearer {credentials.credentials}".encode(),
                                                         settings.token.encode())):
            raise HTTPException(401, "missing or wrong token", headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(authorized)]
    add_faces_route(app, models, settings, guarded)

    @app.exception_handler(RequestValidationError)
    async def validation_failed(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _message(error)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("request %s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(error).__name__}); the service goes on, see its log"},
                            status_code=500)

    def job_or_404(job_id: str) -> dict[str, Any]:
        job = store.get(job_id) if valid_job_id(job_id) else None
        if job is None:
            raise HTTPException(404, "no such job (unknown id, or it expired or was deleted)")
        return job

    @app.get("/v1/health", response_model=HealthModel, tags=["service"],
             summary="Is the service up, are the models loaded, how full is the queue")
    async def health() -> JSONResponse:
        # Handlers answer JSONResponse: the models document the schema, the store's dicts need no re-validation.
        status = models.status()
        return JSONResponse({"version": __version__, "device": status["device"],
                             "device_warning": gpu_warning(status["device"]) if status["device"] else None,
                             "models": {key: status[key] for key in ("state", "error", "loaded", "fast", "compiling")},
                             "queue_length": store.queue_length(), "queue_capacity": settings.queue_capacity,
                             "token_required": settings.token is not None})

    @app.post("/v1/jobs", status_code=202, response_model=JobModel, dependencies=guarded, tags=["jobs"],
              summary="Submit a photo", responses=_errors(400, 401, 413, 415, 422, 429, 503),
              description="Queues one head. The photo's type is recognised from its content. Omitted options "
                          "take GenerateOptions' defaults. Answers at once; the job runs when its turn comes.")
    def submit(
        photo: Annotated[UploadFile, File(description="the photo (JPEG, PNG, WebP, TIFF, ...)")],
        face_index: Annotated[int | None, Form(description="which face, numbered left to right "
                                                           "(default: the largest)")] = None,
        landmarks: Annotated[str | None, Form(description="JSON: five [x, y] points in photo pixels, y down, "
                                                          "insightface order, or 68 in the iBUG-300W "
                                                          "order; replace face detection")] = None,
        steps: Annotated[int | None, Form(description="sampler steps (1..500, default 50)")] = None,
        sampler: Annotated[str | None, Form(description="'ddim' (official, default) or 'dpmpp' "
                                                        "(DPM-Solver++, good at 20 steps)")] = None,
        eta: Annotated[float | None, Form(description="DDIM eta (0..1)")] = None,
        seed: Annotated[int | None, Form(description="random seed of the diffusion")] = None,
        texture_size: Annotated[int | None, Form(description="side of albedo.png in pixels (256..2048)")] = None,
        texture: Annotated[str | None, Form(description="'default' (photo pixels where visible) or 'official' "
                                                        "(the official colour-matched texture alone)")] = None,
        delight: Annotated[bool | None, Form(description="divide out the fitted shading")] = None,
        expression: Annotated[str | None, Form(description="'photo' or 'neutral'")] = None,
        head: Annotated[str | None, Form(description="'bfm' (default), 'full' (the ICT full head, head_full.*) "
                                                     "or 'both'")] = None,
    ) -> JSONResponse:
        if models.state == "failed":
            raise HTTPException(503, f"the models could not be loaded ({models.error}); fix the model files "
                                     "(`uvidm weights check`) and restart the service")
        given = {"face_index": face_index, "steps": steps, "sampler": sampler, "eta": eta, "seed": seed,
                 "texture_size": texture_size, "texture": texture, "delight": delight, "expression": expression,
                 "head": head}
        try:
            chosen = {key: value for key, value in given.items() if value is not None}
            chosen["landmarks"] = parse_landmarks(landmarks)
            options = GenerateOptions(**chosen)
        except InputError as error:
            raise HTTPException(422, str(error)) from error
        data = photo.file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"the photo is larger than the limit of "
                                     f"{settings.max_upload_bytes / 1024 / 1024:.0f} MB: send a smaller one")
        try:
            extension = check_photo(data, settings.max_pixels)
        except PhotoRejected as error:
            raise HTTPException(error.status, str(error)) from error
        try:
            job = store.create(data, safe_file_name(photo.filename), extension, options.to_dict())
        except QueueFull as error:
            raise HTTPException(429, str(error), headers={"Retry-After": str(error.retry_after)}) from error
        return JSONResponse(job, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})

    @app.get("/v1/jobs/{job_id}", response_model=JobModel, dependencies=guarded, tags=["jobs"],
             summary="A job's state", responses=_errors(401, 404))
    async def get_job(job_id: str) -> JSONResponse:
        return JSONResponse(job_or_404(job_id))

    @app.get("/v1/jobs/{job_id}/events", dependencies=guarded, tags=["jobs"], summary="Progress as server-sent events",
             response_class=StreamingResponse, responses={
                 200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                       "description": "`event: progress` with the job JSON as `data` at each change, then "
                                      "`event: end` with the final job JSON (or its last state when it was "
                                      "deleted); `: keep-alive` comments in between"},
                 **_errors(401, 404)})
    async def events(job_id: str) -> StreamingResponse:
        job_or_404(job_id)

        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            sent_version, last = None, None
            quiet_since = time.monotonic()
            while True:
                version, job = store.snapshot(job_id)
                if job is None:
                    yield f"event: end\ndata: {json.dumps(last)}\n\n"
                    return
                if version != sent_version:
                    sent_version, last, quiet_since = version, job, time.monotonic()
                    if job["state"] in ("done", "failed", "cancelled"):
                        yield f"event: progress\ndata: {json.dumps(job)}\n\nevent: end\ndata: {json.dumps(job)}\n\n"
                        return
                    yield f"event: progress\ndata: {json.dumps(job)}\n\n"
                elif time.monotonic() - quiet_since > SSE_KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(SSE_POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def finished_job(job_id: str) -> dict[str, Any]:
        job = job_or_404(job_id)
        if job["state"] != "done":
            raise HTTPException(409, f"the job is {job['state']}" + (f": {job['error']}" if job["error"] else "")
                                + ("; its files are there when it is done" if job["state"] in ("queued", "running")
                                   else ""))
        return job

    @app.get("/v1/jobs/{job_id}/files/{name}", dependencies=guarded, tags=["jobs"], summary="One output file",
             response_class=FileResponse, responses={
                 200: {"content": {media: {} for media in MEDIA_TYPES.values()},
                       "description": f"one of {', '.join(SERVED_FILES)}"}, **_errors(401, 404, 409)})
    def get_file(job_id: str, name: str) -> FileResponse:
        if name not in SERVED_FILES:
            raise HTTPException(404, f"no such file: the files are {', '.join(SERVED_FILES)}")
        finished_job(job_id)
        path = store.output_file(job_id, name)
        if path is None:
            raise HTTPException(404, f"this job has no {name}")
        return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], filename=name)

    @app.get("/v1/jobs/{job_id}/archive", dependencies=guarded, tags=["jobs"], summary="All output files as a zip",
             response_class=Response, responses={200: {"content": {"application/zip": {}}}, **_errors(401, 404, 409)})
    def archive(job_id: str) -> Response:
        job = finished_job(job_id)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as bundle:
            for name in job["files"]:
                path = store.output_file(job_id, name)
                if path is not None:  # PNG and GLB are compressed already
                    kind = zipfile.ZIP_STORED if path.suffix in (".png", ".glb") else zipfile.ZIP_DEFLATED
                    bundle.write(path, name, compress_type=kind)
        stem = job["photo"].rsplit(".", 1)[0] or "head"
        return Response(buffer.getvalue(), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{stem}-{job_id[:8]}.zip"'})

    @app.delete("/v1/jobs/{job_id}", dependencies=guarded, tags=["jobs"], summary="Cancel or delete a job",
                responses={200: {"model": JobModel, "description": "a queued job, now cancelled"},
                           202: {"model": JobModel, "description": "a running job, asked to stop: it becomes "
                                                                   "'cancelled' at its next step"},
                           204: {"description": "a finished job, deleted with its files"}, **_errors(401, 404)})
    def delete_job(job_id: str) -> Response:
        outcome, job = store.cancel(job_id)
        if outcome == "unknown":
            raise HTTPException(404, "no such job (unknown id, or it expired or was deleted)")
        if outcome == "cancelled":
            return JSONResponse(job, status_code=200)
        if outcome == "cancelling":
            return JSONResponse(job, status_code=202)
        store.delete(job_id)
        return Response(status_code=204)

    return app
