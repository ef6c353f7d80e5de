"""The HTTP API of docs/API.md: `create_app(settings, runner)` builds the FastAPI application.

The runner (uvidm_backend.pipeline.Pipeline, or anything with `generate_to_folder` and `describe`)
is injected; a worker.ModelHolder can stand in for one that is still loading. Handlers never run
the pipeline: they check the input, store the upload and answer; the one worker thread runs jobs.

Where things live: `security` (Host, Origin, CORS, token), `limits` (size, body time, queue place,
HEAD, decode memory), `validation` (options and photo), `routes/` (one module per resource),
`events` (the SSE stream), `errors` (failures as HTTP answers), `server` (uvicorn, timeouts, shutdown).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware

from uvidm_backend import __version__
from uvidm_backend.service import errors
from uvidm_backend.service.context import Service
from uvidm_backend.service.jobs import JobStore
from uvidm_backend.service.limits import BodyDeadline, DecodeBudget, HeadAsGet, SubmissionGate, UploadLimit
from uvidm_backend.service.model_download import ModelDownloads
from uvidm_backend.service.routes import faces, health, jobs
from uvidm_backend.service.routes import models as model_files
from uvidm_backend.service.security import BrowserGuard, TokenCheck, cors_options
from uvidm_backend.service.settings import ServiceSettings
from uvidm_backend.service.worker import Cleaner, ModelHolder, Runner, Worker

log = logging.getLogger(__name__)

FORM_SLACK = 256 * 1024  # multipart boundaries and the option fields on top of the photo
DESCRIPTION = """
Turns one photo of a face into a textured 3D head (UV-IDM). Submit a photo with `POST /v1/jobs`,
follow the job with `GET /v1/jobs/{id}` or the event stream `GET /v1/jobs/{id}/events`, then
download the files or the whole folder as a zip. Jobs run one at a time; results are kept for a
limited time. When the service was started with a token, every endpoint except `/v1/health` needs
`Authorization: Bearer <token>`. Requests from web pages (an `Origin` header) are refused unless
the service allows that origin.
"""


def create_app(settings: ServiceSettings, runner: Runner | ModelHolder,
               downloads: ModelDownloads | None = None) -> FastAPI:
    """The FastAPI application; its lifespan recovers the jobs folder and starts the worker and the cleaner."""
    models = runner if isinstance(runner, ModelHolder) else ModelHolder(runner=runner)
    store = JobStore(settings.jobs_dir, settings.queue_capacity, settings.keep_hours)
    context = Service(settings, store, models, DecodeBudget(settings.decode_budget_bytes), downloads=downloads)
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
            context.stopping.set()
            await run_in_threadpool(worker.stop)
            await run_in_threadpool(cleaner.stop)

    app = FastAPI(title="UV-IDM backend", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.service, app.state.store, app.state.models, app.state.worker = context, store, models, worker
    errors.install(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(model_files.router)
    app.include_router(faces.router)
    # Added last runs first: Host/Origin → CORS → token → size → body time → queue place → HEAD → routes.
    app.add_middleware(HeadAsGet)
    app.add_middleware(SubmissionGate, store=store)
    app.add_middleware(BodyDeadline, seconds=settings.body_timeout_s)
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes + FORM_SLACK,
                       photo_limit=settings.max_upload_bytes)
    app.add_middleware(TokenCheck, token=settings.token)
    if settings.allow_origins:
        app.add_middleware(CORSMiddleware, **cors_options(settings))
    app.add_middleware(BrowserGuard, settings=settings)
    return app
