"""HTTP client for the `uvidm serve` API (docs/API.md), standard library only.

No bpy here: the add-on calls this from a worker thread and the tests call it without Blender.
Every failure becomes a `BackendError` whose message a user can act on (what went wrong, what
to do), because the panel shows it as it is.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8765"
OUTPUT_FILES = ("head.glb", "head.obj", "head.mtl", "albedo.png", "albedo_model.png", "preview.png", "result.json")
FINAL_STATES = ("done", "failed", "cancelled")
_IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
                ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff"}


class BackendError(Exception):
    """A failed call, in words for the user; `status` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class BackendUnreachable(BackendError):
    """Nothing answered at the URL (not started, wrong port, firewall)."""


@dataclass(frozen=True)
class JobOptions:
    """The form fields of POST /v1/jobs; None leaves the backend's default."""

    face_index: int | None = None
    landmarks: tuple[tuple[float, float], ...] | None = None
    steps: int | None = None
    sampler: str | None = None
    eta: float | None = None
    seed: int | None = None
    texture_size: int | None = None
    delight: bool | None = None
    expression: str | None = None

    def form_fields(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        for name, value in self.__dict__.items():
            if value is None:
                continue
            if isinstance(value, bool):
                fields[name] = "true" if value else "false"
            elif name == "landmarks":
                fields[name] = json.dumps([[float(x), float(y)] for x, y in value])
            else:
                fields[name] = str(value)
        return fields


def normalize_url(url: str) -> str:
    """'localhost:8765/' -> 'http://localhost:8765' (users paste URLs in many shapes)."""
    url = (url or "").strip() or DEFAULT_URL
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def parse_landmarks(text: str) -> tuple[tuple[float, float], ...] | None:
    """Five [x, y] points from JSON text ('' -> None); ValueError in words for anything else."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        points = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"landmarks are not valid JSON ({error.msg}); write five [x, y] points") from error
    if (not isinstance(points, list) or len(points) != 5
            or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(v, int | float) for v in p)
                       for p in points)):
        raise ValueError("landmarks must be five [x, y] points: eyes, nose tip, mouth corners")
    return tuple((float(x), float(y)) for x, y in points)


def encode_multipart(fields: Mapping[str, str], files: Mapping[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """multipart/form-data body and its content type; `files` maps field -> (filename, data, type)."""
    boundary = "uvidm-" + secrets.token_hex(16)
    chunks: list[bytes] = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        chunks.append(value.encode("utf-8") + b"\r\n")
    for name, (filename, data, content_type) in files.items():
        safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe_name}"\r\n'
                      f"Content-Type: {content_type}\r\n\r\n".encode())
        chunks.append(data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def _detail(body: bytes) -> str:
    try:
        detail = json.loads(body.decode("utf-8")).get("detail")
    except (ValueError, AttributeError, UnicodeDecodeError):
        detail = None
    if isinstance(detail, list):  # FastAPI validation errors: [{"loc": [...], "msg": ...}]
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                           if isinstance(d, dict) else str(d) for d in detail)
    if detail:
        return str(detail)
    return body.decode("utf-8", "replace").strip()[:300]


def _http_error(status: int, body: bytes, headers: Mapping[str, str], url: str) -> BackendError:
    detail = _detail(body)
    if status in (401, 403):
        return BackendError("The backend refused the access token: set the same token in the add-on preferences "
                            "as the one the backend was started with.", status)
    if status == 404:
        return BackendError(f"The backend does not know this job or file ({detail or url}); it may have been "
                            "restarted. Generate again.", status)
    if status == 413:
        return BackendError(f"The photo is too large for the backend ({detail}). Use a smaller image.", status)
    if status == 415:
        return BackendError(f"The backend cannot read this photo ({detail}). Use a JPEG or PNG image.", status)
    if status in (400, 422):
        return BackendError(f"The backend refused the request: {detail}", status)
    if status == 429:
        retry = headers.get("Retry-After")
        try:
            seconds = float(retry) if retry is not None else None
        except ValueError:
            seconds = None
        wait = f" in {seconds:g} s" if seconds is not None else " later"
        return BackendError(f"The backend is busy (its queue is full). Try again{wait}.", status, seconds)
    return BackendError(f"The backend failed (HTTP {status}): {detail or 'no details'}. See the backend log.", status)


class Client:
    """One backend: `Client("http://127.0.0.1:8765", token=None)`; thread-safe (no shared state)."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None, timeout: float = 10.0):
        self.base_url = normalize_url(base_url)
        self.token = token or None
        self.timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                 timeout: float | None = None) -> tuple[int, bytes, Mapping[str, str]]:
        url = self.base_url + path
        headers = {"Accept": "application/json", "User-Agent": "uvidm-blender"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        # No proxy for the backend: a system proxy would swallow loopback requests.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=timeout or self.timeout) as response:
                return response.status, response.read(), response.headers
        except urllib.error.HTTPError as error:
            raise _http_error(error.code, error.read() or b"", error.headers or {}, url) from error
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            if isinstance(reason, TimeoutError):
                raise BackendUnreachable(f"The backend at {self.base_url} did not answer in time. It may be busy "
                                         "loading models; check it in the add-on preferences.") from error
            raise BackendUnreachable(f"No UV-IDM backend answers at {self.base_url} ({reason}). Start it in the "
                                     "add-on preferences (Backend: Start) or fix the URL.") from error

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        status, body, _ = self._request(method, path, **kwargs)
        if status == 204 or not body:
            return None
        try:
            return json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise BackendError(f"{self.base_url} answered something that is not the UV-IDM backend "
                               "(not JSON). Check the URL.", status) from error

    def health(self, timeout: float | None = None) -> dict[str, Any]:
        health = self._json("GET", "/v1/health", timeout=timeout)
        if not isinstance(health, dict) or "models" not in health:
            raise BackendError(f"{self.base_url} answered, but not like the UV-IDM backend. Check the URL.")
        return health

    def submit(self, photo: str | os.PathLike[str], options: JobOptions | None = None,
               timeout: float = 120.0) -> dict[str, Any]:
        """POST the photo; returns the job (state 'queued')."""
        photo = Path(photo)
        try:
            data = photo.read_bytes()
        except OSError as error:
            raise BackendError(f"Cannot read the photo {photo}: {error.strerror or error}.") from error
        content_type = _IMAGE_TYPES.get(photo.suffix.lower(), "application/octet-stream")
        body, form_type = encode_multipart((options or JobOptions()).form_fields(),
                                           {"photo": (photo.name, data, content_type)})
        return self._json("POST", "/v1/jobs", body=body, content_type=form_type, timeout=timeout)

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}")

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """DELETE: cancels a queued/running job (returns it), deletes a finished one (None)."""
        return self._json("DELETE", f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}")

    def file(self, job_id: str, name: str, timeout: float = 120.0) -> bytes:
        path = f"/v1/jobs/{urllib.parse.quote(job_id, safe='')}/files/{urllib.parse.quote(name, safe='')}"
        return self._request("GET", path, timeout=timeout)[1]

    def download(self, job_id: str, names: list[str], folder: str | os.PathLike[str]) -> Path:
        """Write the named output files into `folder` (created); only plain names, never paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            if Path(name).name != name or name.startswith("."):
                raise BackendError(f"The backend listed an odd file name {name!r}; refusing to write it.")
            (folder / name).write_bytes(self.file(job_id, name))
        return folder


def describe_health(health: Mapping[str, Any]) -> str:
    """The health JSON in one plain sentence for the status line."""
    models = health.get("models") or {}
    state = models.get("state")
    where = f"on {health.get('device')}" if health.get("device") else ""
    version = f"UV-IDM backend {health.get('version', '?')} {where}".strip()
    queue = health.get("queue_length")
    capacity = health.get("queue_capacity")
    queue_text = f"; {queue} of {capacity} queue places taken" if queue is not None and capacity else ""
    if state == "ready" and models.get("compiling"):
        return (f"{version}: ready{queue_text}; jobs get faster once the network is compiled, a minute or two "
                "after start-up.")
    if state == "ready":
        return f"{version}: ready{queue_text}."
    if state == "loading":
        return f"{version}: loading the models, wait a moment."
    if state == "failed":
        return (f"{version}: the models failed to load ({models.get('error') or 'no details'}). "
                "Check the model folder in the add-on preferences.")
    return f"{version}: models {state or 'unknown'}."


def describe_job(job: Mapping[str, Any]) -> str:
    """A job's state in words: 'Queued (2 ahead)', 'Running: diffusion (40%)', 'Failed: ...'."""
    state = job.get("state")
    if state == "queued":
        position = job.get("queue_position")
        return f"Queued ({position} ahead)" if position else "Queued"
    if state == "running":
        stage = job.get("stage") or "working"
        return f"Running: {stage} ({round(100 * float(job.get('progress') or 0))}%)"
    if state == "failed":
        return f"Failed: {job.get('error') or 'no details from the backend'}"
    if state == "cancelled":
        return "Cancelled"
    if state == "done":
        return "Done"
    return str(state)
