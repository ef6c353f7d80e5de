"""GET /v1/health: is the service up, are the models loaded, how full is the queue (no token needed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from uvidm_backend import __version__
from uvidm_backend.devices import gpu_warning
from uvidm_backend.service.context import Service, service
from uvidm_backend.service.schema import HealthModel

router = APIRouter(tags=["service"])
MISSING_ADVICE = ("the model files are missing: POST /v1/models/download (after GET /v1/models/plan shows what and "
                  "under which licences), or run `uvidm weights download` on the machine of the service")


@router.get("/v1/health", response_model=HealthModel,
            summary="Is the service up, are the models loaded, how full is the queue")
async def health(context: Annotated[Service, Depends(service)]) -> JSONResponse:
    # Handlers answer JSONResponse: the models document the schema, the store's dicts need no re-validation.
    status = context.models.status()
    models = {key: status[key] for key in ("state", "error", "loaded", "fast", "compiling", "missing")}
    download = context.downloads.status() if context.downloads is not None else None
    models["download"] = download
    if models["state"] == "missing":
        if download is not None and download["state"] == "running":
            models["state"] = "downloading"
        models["advice"] = MISSING_ADVICE
    return JSONResponse({"version": __version__, "device": status["device"],
                         "device_warning": gpu_warning(status["device"]) if status["device"] else None,
                         "models": models,
                         "queue_length": context.store.queue_length(),
                         "queue_capacity": context.settings.queue_capacity,
                         "token_required": context.settings.token is not None})
