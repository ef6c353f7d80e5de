"""The server-sent event stream of one job (GET /v1/jobs/{id}/events, docs/API.md "Events").

A poll of the store five times a second: `progress` at each change, `end` when the job finished,
was deleted, the client went away, or the service began to shut down (then `end` carries the job's
state at that moment), so no stream outlives the server by more than one poll.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from uvidm_backend.service.context import Service
from uvidm_backend.service.jobs import FINISHED

POLL_S = 0.2
KEEPALIVE_S = 15.0


def _event(name: str, job: object) -> str:
    return f"event: {name}\ndata: {json.dumps(job)}\n\n"


async def job_events(service: Service, job_id: str, disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    sent_version, last = None, None
    quiet_since = time.monotonic()
    while True:
        version, job = service.store.snapshot(job_id)
        if job is None:  # deleted meanwhile: its last state
            yield _event("end", last)
            return
        if version != sent_version:
            sent_version, last, quiet_since = version, job, time.monotonic()
            yield _event("progress", job)
            if job["state"] in FINISHED:
                yield _event("end", job)
                return
        elif time.monotonic() - quiet_since > KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": keep-alive\n\n"
        if service.stopping.is_set():
            yield ": the service is shutting down\n\n" + _event("end", job)
            return
        if await disconnected():
            return
        await asyncio.sleep(POLL_S)
