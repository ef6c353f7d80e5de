"""The uvicorn server of `uvidm serve`: timeouts for slow clients and a shutdown that ends event streams.

uvicorn times out idle keep-alive connections (`timeout_keep_alive`) but not a request whose line
and headers trickle in: `HeaderDeadline` closes such a connection with 408 after
`header_timeout_s` (the body has its own deadline, limits.BodyDeadline). At shutdown uvicorn waits
for open responses before the app's lifespan ends, and an event stream never ends by itself:
`ServiceServer` first tells the streams (Service.stopping), which end with `end` at their next poll.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from uvidm_backend.service.events import POLL_S
from uvidm_backend.service.settings import ServiceSettings

MAX_HEADER_BYTES = 64 * 1024  # request line and headers (h11's default is 16 KB; long cookies exist)
GRACEFUL_SHUTDOWN_S = 5  # what a response still running after the streams ended may take


class HeaderDeadline(H11Protocol):
    """h11 with a deadline for each request's line and headers, from the connection (or from the first byte
    of a later request on a kept-alive connection). `header_timeout_s` is set by `header_deadline`."""

    header_timeout_s = 10.0
    _408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: 42\r\n\r\nthe request headers did not arrive in time")

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._watch_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_headers()

    def _watch_headers(self) -> None:
        waiting = self.conn.their_state is h11.IDLE and self.conn.our_state is not h11.MUST_CLOSE
        idling = self.timeout_keep_alive_task is not None  # between requests: uvicorn's keep-alive timer runs
        if waiting and not idling and self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)
        elif not waiting:
            self._stop_header_timer()

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.write(self._408)
            self.transport.close()


def header_deadline(seconds: float) -> type[HeaderDeadline]:
    return type("HeaderDeadline", (HeaderDeadline,), {"header_timeout_s": seconds})


class ServiceServer(uvicorn.Server):
    """uvicorn's server, ending the app's event streams before it waits for open connections."""

    def __init__(self, config: uvicorn.Config, app: FastAPI):
        super().__init__(config)
        self.service = app.state.service

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.service.stopping.set()
        if self.server_state.connections:  # streams send `end` at their next poll; their connections then close
            await asyncio.sleep(2 * POLL_S)
        await super().shutdown(sockets)


def build_server(app: FastAPI, settings: ServiceSettings, **config: Any) -> ServiceServer:
    """The server for `app` on settings.host:port (`config`: more uvicorn.Config arguments, e.g. log_level)."""
    config.setdefault("log_level", "warning")
    return ServiceServer(uvicorn.Config(
        app, host=settings.host, port=settings.port, http=header_deadline(settings.header_timeout_s),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_keep_alive=5,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **config), app)
