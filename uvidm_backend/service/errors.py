"""How failures become HTTP answers: every error is `{"detail": message}` (plus `field` for 422)."""

from __future__ import annotations

import logging
import tempfile

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException  # FastAPI's is a subclass; Starlette's form parser raises this

from uvidm_backend.pipeline.output_folder import is_disk_full
from uvidm_backend.service.validation import OptionError

log = logging.getLogger(__name__)

DISK_FULL = ("the service's disk is full, so the upload could not be stored; nothing was kept. Try again "
             "later (whoever runs the service must free space where it keeps its jobs)")


def temp_folder_full() -> str:
    return (f"the service's temporary folder ({tempfile.gettempdir()}) is full, so the upload could not be "
            "received; nothing was kept. Try again later (whoever runs the service must free space there)")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(OptionError, _option_refused)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and len(chain) < 16:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    detail = error.detail
    if error.status_code == 400:
        # FastAPI reports any failure while parsing the form as a 400; the cause says what it was.
        causes = _causes(error)
        if any(is_disk_full(cause) for cause in causes):
            log.error("the temporary folder %s is full: an upload was refused", tempfile.gettempdir())
            return JSONResponse({"detail": temp_folder_full()}, status_code=507)
        if any("header size exceeded" in str(cause).lower() for cause in causes):
            detail = ("a part header of the form is longer than 4 KB, most likely because of the photo's file name: "
                      "send the photo under a shorter file name")
    return JSONResponse({"detail": detail}, status_code=error.status_code, headers=error.headers)


async def _option_refused(request: Request, error: OptionError) -> JSONResponse:
    return JSONResponse({"detail": f"{error.field}: {error}", "field": error.field}, status_code=422)


async def _validation_failed(request: Request, error: RequestValidationError) -> JSONResponse:
    parts, fields = [], []
    for item in error.errors():
        field = ".".join(str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path"))
        fields.append(field)
        if item.get("type") == "missing":
            parts.append(f"{field or 'a field'} is required")
        else:
            given = str(item.get("input"))
            given = given if len(given) <= 60 else given[:57] + "..."
            parts.append(f"{field}: {item.get('msg')} (got {given!r})" if field else str(item.get("msg")))
    return JSONResponse({"detail": "; ".join(parts) or "invalid request", "field": fields[0] if fields else None},
                        status_code=422)


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    if is_disk_full(error):
        log.error("disk full while answering %s %s: %s", request.method, request.url.path, error)
        return JSONResponse({"detail": DISK_FULL}, status_code=507)
    log.exception("request %s %s failed", request.method, request.url.path)
    return JSONResponse({"detail": f"internal error ({type(error).__name__}); the service goes on, see its log"},
                        status_code=500)
