"""The jobs resource: submit a photo, follow the job, download its files, cancel or delete it.

POST /v1/jobs runs after the middleware of `limits` (token, size, a reserved queue place); here:
the models' state, the options (422 naming the field), the photo (decoded within the memory budget),
the landmarks against the photo, then the job is stored in the reserved place (507 on a full disk).
"""

from __future__ import annotations

import io
import zipfile
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse

from uvidm_backend.pipeline.options import EXPRESSIONS, HEADS, SAMPLERS, TEXTURE_SIZES, TEXTURES
from uvidm_backend.pipeline.output_folder import is_disk_full
from uvidm_backend.service.context import Service, service
from uvidm_backend.service.errors import DISK_FULL
from uvidm_backend.service.events import job_events
from uvidm_backend.service.jobs import SERVED_FILES, QueueFull, safe_file_name, valid_job_id
from uvidm_backend.service.routes.auth import GUARDED
from uvidm_backend.service.routes.health import MISSING_ADVICE
from uvidm_backend.service.schema import JobModel, errors
from uvidm_backend.service.validation import (
    LANDMARKS_MAX_CHARS,
    SEED_MAX,
    PhotoRejected,
    check_face_index,
    check_landmarks,
    check_photo,
    generate_options,
    parse_landmarks,
)

MEDIA_TYPES = {".glb": "model/gltf-binary", ".obj": "model/obj", ".mtl": "model/mtl", ".png": "image/png",
               ".json": "application/json"}
NO_SUCH_JOB = "no such job (unknown id, or it expired or was deleted)"

router = APIRouter(tags=["jobs"], dependencies=GUARDED)
Context = Annotated[Service, Depends(service)]


def job_or_404(context: Service, job_id: str) -> dict[str, Any]:
    job = context.store.get(job_id) if valid_job_id(job_id) else None
    if job is None:
        raise HTTPException(404, NO_SUCH_JOB)
    return job


def finished_job(context: Service, job_id: str) -> dict[str, Any]:
    job = job_or_404(context, job_id)
    if job["state"] != "done":
        raise HTTPException(409, f"the job is {job['state']}" + (f": {job['error']}" if job["error"] else "")
                            + ("; its files are there when it is done" if job["state"] in ("queued", "running")
                               else ""))
    return job


@router.post("/v1/jobs", status_code=202, response_model=JobModel, summary="Submit a photo",
             responses=errors(400, 401, 403, 408, 413, 415, 422, 429, 503, 507),
             description="Queues one head. The photo's type is recognised from its content. Omitted options "
                         "take GenerateOptions' defaults. Answers at once; the job runs when its turn comes.")
def submit(
    request: Request,
    context: Context,
    photo: Annotated[UploadFile, File(description="the photo (JPEG, PNG, WebP, TIFF, ...)")],
    face_index: Annotated[int | None, Form(ge=0, description="which face, numbered left to right (default: the "
                                                             "largest); 0 or absent with landmarks")] = None,
    landmarks: Annotated[str | None, Form(max_length=LANDMARKS_MAX_CHARS, description=(
        "JSON: five [x, y] points in photo pixels, y down, insightface order (eyes, nose tip, mouth corners), "
        "or the 68 iBUG points; replace face detection"))] = None,
    steps: Annotated[int | None, Form(ge=1, le=500, description="sampler steps (default 50)")] = None,
    sampler: Annotated[Literal[SAMPLERS] | None, Form(description="'ddim' (official, default) or 'dpmpp' "  # type: ignore[valid-type]
                                                                  "(DPM-Solver++, good at 20 steps)")] = None,
    eta: Annotated[float | None, Form(ge=0, le=1, allow_inf_nan=False, description="DDIM eta")] = None,
    seed: Annotated[int | None, Form(ge=0, le=SEED_MAX, description="random seed of the diffusion")] = None,
    texture_size: Annotated[int | None, Form(ge=TEXTURE_SIZES[0], le=TEXTURE_SIZES[1],
                                             description="side of albedo.png in pixels")] = None,
    texture: Annotated[Literal[TEXTURES] | None, Form(  # type: ignore[valid-type]
        description="'default' (photo pixels where visible) or 'official' (the official colour-matched texture alone)"
    )] = None,
    delight: Annotated[bool | None, Form(description="divide out the fitted shading")] = None,
    expression: Annotated[Literal[EXPRESSIONS] | None, Form(description="'photo' or 'neutral'")] = None,  # type: ignore[valid-type]
    head: Annotated[Literal[HEADS] | None, Form(description="'bfm' (default), 'full' (the ICT full head, "  # type: ignore[valid-type]
                                                            "head_full.*) or 'both'")] = None,
) -> JSONResponse:
    models, settings = context.models, context.settings
    if models.state == "missing":
        raise HTTPException(503, f"{MISSING_ADVICE}; missing: {', '.join(models.missing())}")
    if models.state == "failed":
        raise HTTPException(503, f"the models could not be loaded ({models.error}); the service must be restarted "
                                 "once its model files are fixed")
    given = {"face_index": face_index, "steps": steps, "sampler": sampler, "eta": eta, "seed": seed,
             "texture_size": texture_size, "texture": texture, "delight": delight, "expression": expression,
             "head": head}
    options = generate_options(given, parse_landmarks(landmarks))
    check_landmarks(options)  # before the decode: geometry that needs no photo
    data = photo.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise HTTPException(413, f"the photo is larger than the limit of "
                                 f"{settings.max_upload_bytes / 1024 / 1024:.0f} MB: send a smaller one")
    try:
        checked = check_photo(data, settings.max_pixels, context.decode_budget)
    except PhotoRejected as error:
        raise HTTPException(error.status, str(error), headers=error.headers) from error
    check_landmarks(options, checked.photo)
    check_face_index(options, checked.photo, models.runner)
    extension = checked.extension
    del checked  # the decoded pixels: the job decodes the stored file again
    try:
        job = context.store.create(data, safe_file_name(photo.filename), extension, options.to_dict(),
                                   getattr(request.state, "reservation", None))
    except QueueFull as error:  # only without the gate (an app mounted without its middleware)
        raise HTTPException(429, str(error), headers={"Retry-After": str(error.retry_after)}) from error
    except OSError as error:
        if is_disk_full(error):
            raise HTTPException(507, DISK_FULL) from error
        raise
    return JSONResponse(job, status_code=202, headers={"Location": f"/v1/jobs/{job['id']}"})


@router.get("/v1/jobs/{job_id}", response_model=JobModel, summary="A job's state", responses=errors(401, 403, 404))
async def get_job(job_id: str, context: Context) -> JSONResponse:
    return JSONResponse(job_or_404(context, job_id))


@router.get("/v1/jobs/{job_id}/events", summary="Progress as server-sent events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "`event: progress` with the job JSON as `data` at each change, then "
                                            "`event: end` with the final job JSON (or its last state when it was "
                                            "deleted or the service is shutting down); `: keep-alive` comments in "
                                            "between"},
                       **errors(401, 403, 404)})
async def events(job_id: str, request: Request, context: Context) -> StreamingResponse:
    job_or_404(context, job_id)
    return StreamingResponse(job_events(context, job_id, request.is_disconnected), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/v1/jobs/{job_id}/files/{name}", summary="One output file", response_class=FileResponse,
            responses={200: {"content": {media: {} for media in MEDIA_TYPES.values()},
                             "description": f"one of {', '.join(SERVED_FILES)}"}, **errors(401, 403, 404, 409)})
def get_file(job_id: str, name: str, context: Context) -> FileResponse:
    if name not in SERVED_FILES:
        raise HTTPException(404, f"no such file: the files are {', '.join(SERVED_FILES)}")
    finished_job(context, job_id)
    path = context.store.output_file(job_id, name)
    if path is None:
        raise HTTPException(404, f"this job has no {name}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], filename=name)


@router.get("/v1/jobs/{job_id}/archive", summary="All output files as a zip", response_class=Response,
            responses={200: {"content": {"application/zip": {}}}, **errors(401, 403, 404, 409)})
def archive(job_id: str, context: Context) -> Response:
    job = finished_job(context, job_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name in job["files"]:
            path = context.store.output_file(job_id, name)
            if path is not None:  # PNG and GLB are compressed already
                kind = zipfile.ZIP_STORED if path.suffix in (".png", ".glb") else zipfile.ZIP_DEFLATED
                bundle.write(path, name, compress_type=kind)
    stem = job["photo"].rsplit(".", 1)[0] or "head"
    return Response(buffer.getvalue(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{stem}-{job_id[:8]}.zip"'})


@router.delete("/v1/jobs/{job_id}", summary="Cancel or delete a job",
               responses={200: {"model": JobModel, "description": "a queued job, now cancelled"},
                          202: {"model": JobModel, "description": "a running job, asked to stop: it becomes "
                                                                  "'cancelled' at its next step"},
                          204: {"description": "a finished job, deleted with its files"}, **errors(401, 403, 404)})
def delete_job(job_id: str, context: Context) -> Response:
    outcome, job = context.store.cancel(job_id)
    if outcome == "unknown":
        raise HTTPException(404, NO_SUCH_JOB)
    if outcome == "cancelled":
        return JSONResponse(job, status_code=200)
    if outcome == "cancelling":
        return JSONResponse(job, status_code=202)
    context.store.delete(job_id)
    return Response(status_code=204)
