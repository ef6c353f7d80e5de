"""What the routes share: the settings, the job store, the models, the decode budget, the shutdown flag.

`create_app` builds one `Service` and keeps it in `app.state.service`; a route takes it with
`Depends(service)`. New routes (a models endpoint, say) find everything they need here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from fastapi import Request

from uvidm_backend.service.jobs import JobStore
from uvidm_backend.service.limits import DecodeBudget
from uvidm_backend.service.model_download import ModelDownloads
from uvidm_backend.service.settings import ServiceSettings
from uvidm_backend.service.worker import ModelHolder


@dataclass(frozen=True)
class Service:
    settings: ServiceSettings
    store: JobStore
    models: ModelHolder
    decode_budget: DecodeBudget
    downloads: ModelDownloads | None = None  # None: a fixed runner, no model files to fetch
    # Set when the server begins to shut down: event streams end (with `end`) at their next poll.
    stopping: threading.Event = field(default_factory=threading.Event)


def service(request: Request) -> Service:
    return request.app.state.service
