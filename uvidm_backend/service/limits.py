"""How much a request may cost before it is refused: body size, body time, a queue place, decode memory.

Each middleware is plain ASGI and decides before the route runs, so a refused request costs no
parsing and no decoding: `UploadLimit` (413 from Content-Length), `BodyDeadline` (408 when the body
is late), `SubmissionGate` (429 unless a queue place can be reserved for POST /v1/jobs). `HeadAsGet`
answers HEAD wherever GET is. `DecodeBudget` bounds the memory the photo checks decode at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uvidm_backend.service.jobs import JobStore, QueueFull

SUBMIT_PATH = "/v1/jobs"
DRAIN_LIMIT = 256 * 1024 * 1024  # bytes of a refused body read and dropped so the client sees the answer


class BodyTimeout(HTTPException):
    def __init__(self, seconds: float):
        super().__init__(408, f"the request body did not arrive within {seconds:g} s (a slow or stalled upload, "
                              "or a Content-Length larger than the body): send it again", {"Connection": "close"})


async def drain(receive: Receive, limit: int = DRAIN_LIMIT) -> None:
    """Reads and drops the rest of a body (up to `limit`), so a client that sends before reading gets the answer."""
    drained = 0
    with contextlib.suppress(BodyTimeout):
        while drained <= limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


async def refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str,
                 headers: dict[str, str] | None = None) -> None:
    await drain(receive)
    await JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close", **(headers or {})})(
        scope, receive, send)


class UploadLimit:
    """413 for request bodies over the limit, decided from Content-Length before anything is parsed;
    bodies without (or lying about) Content-Length are counted as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int, photo_limit: int):
        self.app = app
        self.max_bytes = max_bytes
        self.message = (f"the upload is larger than the limit of {photo_limit / 1024 / 1024:.0f} MB: send a smaller "
                        "photo (downscale it, or save it as JPEG)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await refuse(scope, receive, send, 413, self.message)
            return
        total = 0

        async def counted() -> Message:
            nonlocal total
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > self.max_bytes:
                    raise HTTPException(413, self.message)  # FastAPI passes HTTPExceptions out of body parsing
            return message

        await self.app(scope, counted, send)


class BodyDeadline:
    """408 when a request's body is not complete `seconds` after its headers (slow or stalled clients).

    Only the body is timed: once it is complete, `receive` waits for the disconnect as long as the
    response takes (event streams)."""

    def __init__(self, app: ASGIApp, seconds: float):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.seconds
        complete = False
        started = False

        async def timed() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise BodyTimeout(self.seconds) from None
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed, watched)
        except BodyTimeout as error:  # raised outside FastAPI's body parsing (which answers it itself)
            if started:
                raise
            await JSONResponse({"detail": error.detail}, status_code=408, headers=error.headers)(scope, receive, send)


class SubmissionGate:
    """Reserves a queue place for POST /v1/jobs before its body is read: a full queue answers 429 at once,
    without parsing or decoding the upload. The route finds the place in `request.state.reservation`;
    it is given back when the route did not use it."""

    def __init__(self, app: ASGIApp, store: JobStore):
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != SUBMIT_PATH:
            await self.app(scope, receive, send)
            return
        try:
            reservation = self.store.reserve()
        except QueueFull as error:
            await refuse(scope, receive, send, 429, str(error), {"Retry-After": str(error.retry_after)})
            return
        scope.setdefault("state", {})["reservation"] = reservation
        try:
            await self.app(scope, receive, send)
        finally:
            reservation.release()


class HeadAsGet:
    """HEAD wherever GET is: the GET route runs, its headers are sent, its body is not (RFC 9110, 9.3.2)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        finished = False

        async def headers_only(message: Message) -> None:
            nonlocal finished
            if message["type"] == "http.response.start":
                await send(message)
            elif message["type"] == "http.response.body" and not finished:
                finished = True
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def until_answered() -> Message:
            if finished:  # an event stream stops at once: its client has all it asked for
                return {"type": "http.disconnect"}
            return await receive()

        await self.app({**scope, "method": "GET"}, until_answered, headers_only)


class OverBudget(Exception):
    """One photo needs more decode memory than the whole budget."""


class BudgetBusy(Exception):
    """The budget stayed spent by other submissions for the whole wait."""


class DecodeBudget:
    """Bytes the photo checks of concurrent submissions may hold at once (a counting semaphore of bytes)."""

    def __init__(self, total_bytes: int):
        self.total_bytes = total_bytes
        self._free = total_bytes
        self._condition = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int, timeout: float) -> Iterator[None]:
        """Blocks until `nbytes` are free (raises BudgetBusy after `timeout`), holds them for the block."""
        if nbytes > self.total_bytes:
            raise OverBudget
        with self._condition:
            if not self._condition.wait_for(lambda: self._free >= nbytes, timeout):
                raise BudgetBusy
            self._free -= nbytes
        try:
            yield
        finally:
            with self._condition:
                self._free += nbytes
                self._condition.notify_all()
