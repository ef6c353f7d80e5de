"""Who may call the service: the Host and Origin checks (browsers, DNS rebinding), CORS, the token.

A web page the user opens can send requests to 127.0.0.1; the browser then sends its own
`Origin`, and after a DNS rebind a `Host` naming the attacker's domain. So, before anything else:

* `Host` must name this machine (loopback names and addresses), the bound address, or an entry of
  `--allow-host` ('*': any); with a wildcard bind (0.0.0.0, ::) any IP literal too, as a rebind
  needs a name. Otherwise 403.
* a request with an `Origin` is refused (403) unless it comes from the service's own pages (/docs)
  or from an origin of `--allow-origin`; only then are CORS headers sent (Starlette's CORSMiddleware).
* with a token, every endpoint but health and the schema pages needs `Authorization: Bearer <token>`
  (401 before the body is read).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from uvidm_backend.service.settings import WILDCARD_HOSTS, ServiceSettings, is_loopback

log = logging.getLogger(__name__)

OPEN_PATHS = ("/v1/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(header: str) -> str:
    """The name of a Host header without its port: 'Example.org:8765' → 'example.org', '[::1]:80' → '::1'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class BrowserGuard:
    """403 for a Host this service does not answer to, or an Origin that is not allowed (see the module)."""

    def __init__(self, app: ASGIApp, settings: ServiceSettings):
        self.app = app
        self.any_host = "*" in settings.allow_hosts
        self.hosts = {*LOOPBACK_NAMES, *settings.allow_hosts}
        if settings.host not in WILDCARD_HOSTS:
            self.hosts.add(settings.host)
        self.any_ip = settings.host in WILDCARD_HOSTS
        self.any_origin = "*" in settings.allow_origins
        self.origins = set(settings.allow_origins)

    def host_allowed(self, name: str) -> bool:
        return (self.any_host or name in self.hosts or is_loopback(name)
                or (self.any_ip and _is_ip(name)))

    def origin_allowed(self, origin: str, host_header: str) -> bool:
        origin = origin.strip().rstrip("/").lower()
        same_origin = origin in (f"http://{host_header.strip().lower()}", f"https://{host_header.strip().lower()}")
        return same_origin or self.any_origin or origin in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        # No Host at all is HTTP/1.0 from a program, never a browser.
        if host and not self.host_allowed(host_name(host)):
            log.warning("refused a request for Host %r: add it with --allow-host if this machine is reached "
                        "under that name", host)
            await _forbidden(f"this service does not answer to the host name {host_name(host)!r} (Host header): "
                             "use http://127.0.0.1 or an address the service was set up for")(scope, receive, send)
            return
        origin = headers.get(b"origin")
        if origin is not None and not self.origin_allowed(origin.decode("latin-1"), host):
            log.warning("refused a request from the web page origin %r: allow it with --allow-origin", origin)
            await _forbidden(f"requests from web pages of {origin.decode('latin-1')!r} (Origin header) are not "
                             "allowed by this service")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def cors_options(settings: ServiceSettings) -> dict[str, Any]:
    """Starlette CORSMiddleware's arguments: the headers browsers need to call the API from allowed pages."""
    return {"allow_origins": list(settings.allow_origins), "allow_credentials": False,
            "allow_methods": ["GET", "HEAD", "POST", "DELETE"], "allow_headers": ["Authorization", "Content-Type"],
            "expose_headers": ["Location", "Retry-After"], "max_age": 600}


class TokenCheck:
    """With a token configured, refuses requests without `Authorization: Bearer <token>` before reading bodies."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or self.token is None or scope["path"] in OPEN_PATHS
                or scope["method"] == "OPTIONS"):  # CORS preflights carry no credentials
            await self.app(scope, receive, send)
            return
        if not token_matches(dict(scope["headers"]).get(b"authorization"), self.token):
            await unauthorized()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def token_matches(header: bytes | None, token: bytes) -> bool:
    if header is None:
        return False
    scheme, _, value = header.partition(b" ")
    return scheme.lower() == b"bearer" and secrets.compare_digest(value.strip(), token)


def unauthorized() -> JSONResponse:
    return JSONResponse({"detail": "missing or wrong token: send 'Authorization: Bearer <token>' with the token "
                                   "this service was started with"},
                        status_code=401, headers={"WWW-Authenticate": "Bearer"})


def _forbidden(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=403)

