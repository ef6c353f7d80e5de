"""What `uvidm serve` can be told: where it listens, who may call it, how much it accepts and keeps."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from uvidm_backend.cache_dirs import user_cache_dir
from uvidm_backend.pipeline.images import MAX_PIXELS

TOKEN_ENV = "UVIDM_TOKEN"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
MIN_REMOTE_TOKEN = 16  # characters of a token that guards a non-loopback address
WILDCARD_HOSTS = ("0.0.0.0", "::")


def default_jobs_dir() -> Path:
    """The user's cache folder (results are disposable): ~/.cache/uvidm/jobs on Linux."""
    return user_cache_dir() / "jobs"


def bare_host(host: str) -> str:
    """An address as sockets take it: '[::1]' (URL form) becomes '::1', names are lower-cased."""
    host = host.strip().lower()
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, "localhost")."""
    host = bare_host(host)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


class SettingsError(ValueError):
    """Settings the service refuses to start with; the message says what to change."""


@dataclass(frozen=True)
class ServiceSettings:
    host: str = DEFAULT_HOST  # '::1' and '[::1]' both work; stored bare
    port: int = DEFAULT_PORT
    # With a token every endpoint except GET /v1/health needs `Authorization: Bearer <token>`.
    token: str | None = None
    jobs_dir: Path = field(default_factory=default_jobs_dir)
    queue_capacity: int = 16  # queued jobs (the running one not counted); more → 429
    keep_hours: float = 24.0  # finished jobs are deleted this long after they finished
    cleanup_interval_s: float = 600.0
    max_upload_bytes: int = 30 * 1024 * 1024  # request body limit of POST /v1/jobs → 413
    # Photo width x height → 413, checked from the header before decoding; the photo loader's own
    # limit (pipeline.images.MAX_PIXELS) is the ceiling.
    max_pixels: int = MAX_PIXELS
    # Memory the submissions may spend decoding photos at once (the decode check); a photo that
    # alone needs more → 413 before anything is allocated, others wait their turn.
    decode_budget_bytes: int = 1024 * 1024 * 1024
    # Host header names accepted besides loopback names and the bound address ('*': any).
    allow_hosts: tuple[str, ...] = ()
    # Web page origins (scheme://host[:port]) allowed to call the API, with CORS ('*': any).
    allow_origins: tuple[str, ...] = ()
    header_timeout_s: float = 10.0  # a request's line and headers must arrive within this → else 408
    body_timeout_s: float = 120.0  # a request's whole body must arrive within this → else 408

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", bare_host(self.host))
        object.__setattr__(self, "jobs_dir", Path(self.jobs_dir).expanduser())
        object.__setattr__(self, "allow_hosts", tuple(bare_host(host) for host in self.allow_hosts if host.strip()))
        object.__setattr__(self, "allow_origins", tuple(origin.strip().rstrip("/").lower()
                                                        for origin in self.allow_origins if origin.strip()))
        if self.token is not None and not self.token.strip():
            object.__setattr__(self, "token", None)
        if not 1 <= self.queue_capacity <= 100_000:
            raise SettingsError(f"queue capacity must be between 1 and 100000 (got {self.queue_capacity})")
        if self.keep_hours < 0:
            raise SettingsError(f"keep hours must be 0 or more (got {self.keep_hours})")
        if self.cleanup_interval_s <= 0:
            raise SettingsError(f"cleanup interval must be positive (got {self.cleanup_interval_s})")
        if self.max_upload_bytes < 1024:
            raise SettingsError(f"the upload limit must be at least 1 KB (got {self.max_upload_bytes} bytes)")
        if not 1 <= self.max_pixels <= MAX_PIXELS:
            raise SettingsError(f"the pixel limit must be between 1 and {MAX_PIXELS / 1e6:g} megapixels, the photo "
                                f"loader's limit (got {self.max_pixels / 1e6:g})")
        if self.decode_budget_bytes < 16 * 1024 * 1024:
            raise SettingsError(f"the decode memory budget must be at least 16 MB (got {self.decode_budget_bytes})")
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port must be between 0 and 65535 (got {self.port})")
        if not (self.header_timeout_s > 0 and self.body_timeout_s > 0):
            raise SettingsError("the header and body timeouts must be positive")
        for origin in self.allow_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise SettingsError(f"an allowed origin is scheme://host[:port], such as http://localhost:3000 "
                                    f"(got {origin!r})")

    @property
    def url(self) -> str:
        """Where clients find the service (IPv6 addresses in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def check_exposure(self) -> None:
        """Refuses to listen beyond this machine without a strong token: the jobs hold people's photos."""
        if is_loopback(self.host):
            return
        if self.token is None:
            raise SettingsError(
                f"refusing to listen on {self.host} without a token: anyone who can reach this address could "
                f"send jobs and read the results. Set one with --token or ${TOKEN_ENV} (clients then send "
                f"'Authorization: Bearer <token>'), or bind {DEFAULT_HOST}.")
        if len(self.token) < MIN_REMOTE_TOKEN:
            raise SettingsError(
                f"refusing to listen on {self.host} with a token of {len(self.token)} characters: off loopback it "
                f"must have at least {MIN_REMOTE_TOKEN}, so it cannot be guessed. Make one with "
                "`python -c \"import secrets; print(secrets.token_urlsafe(24))\"`.")
