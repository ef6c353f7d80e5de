"""HTTP client for the `uvidm serve` API (docs/API.md), standard library only.

No bpy here: the add-on calls this from a worker thread and the tests call it without Blender.
Every failure becomes a `BackendError` whose message a user can act on (what went wrong, what
to do), because the panel shows it as it is.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8765"
OUTPUT_FILES = ("head.glb", "head.obj", "head.mtl", "albedo.png", "albedo_model.png", "albedo_model_matched.png",
                "preview.png", "result.json",
                # the ICT full head (head "full" or "both")
                "head_full.glb", "head_full.obj", "head_full.mtl", "head_full_skin.png", "head_full_sclera_L.png",
                "head_full_sclera_R.png", "head_full_iris_L.png", "head_full_iris_R.png")
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
    texture: str | None = None  # "default" or "official"
    head: str | None = None  # "bfm", "full" or "both"

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


ACCESS_PROBE = "uvidm-access-check"  # a well-formed job id no job has: 404 with a good token, 401 with a bad one
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Backend messages name command-line options; in Blender the same thing is a button or a field.
_BLENDER_WORDS = (
    (re.compile(r",? ?or give five points with --landmarks"), ", or choose a landmarks file (Advanced > Landmarks)"),
    (re.compile(r"give five points with --landmarks"), "choose a landmarks file (Advanced > Landmarks)"),
    (re.compile(r"`uvidm weights download`"), "Download Model Files (add-on preferences)"),
    (re.compile(r"\(`uvidm weights check`\) and restart the service"), "and restart the backend"),
    (re.compile(r" ?\(--token or \$UVIDM_TOKEN\)"), ""),
    (re.compile(r"restart the service"), "restart the backend"),
)


def in_blender_words(message: str) -> str:
    """A backend message with its command-line advice turned into what to do in Blender."""
    for pattern, words in _BLENDER_WORDS:
        message = pattern.sub(words, message)
    return message


def normalize_url(url: str) -> str:
    """'localhost:8765/' -> 'http://localhost:8765' (users paste URLs in many shapes)."""
    url = (url or "").strip() or DEFAULT_URL
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def url_problem(url: str) -> str | None:
    """Why `url` (normalized) cannot be a backend's address, in words; None when it can."""
    example = "write it like http://192.168.1.20:8765"
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        return f"The backend URL {url!r} contains spaces or control characters: {example}."
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises for a port that is not a number
    except ValueError as error:
        return f"The backend URL {url} is not a valid address ({error}): {example}."
    if parts.scheme not in ("http", "https"):
        return f"The backend URL {url} must start with http:// or https://: {example}."
    if not parts.hostname:
        return f"The backend URL {url} names no computer: {example}."
    return None


def is_loopback(url: str) -> bool:
    """Does the URL point at this computer (where Blender's online-access setting does not apply)?"""
    try:
        host = urllib.parse.urlsplit(normalize_url(url)).hostname or ""
    except ValueError:
        return False
    return host in LOOPBACK_HOSTS or host.startswith("127.")


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


def _json_detail(body: bytes) -> Any:
    """The `detail` of a JSON error body (the backend's), None for anything else (an HTML page...)."""
    try:
        return json.loads(body.decode("utf-8")).get("detail")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None


def _detail(body: bytes) -> str:
    detail = _json_detail(body)
    if isinstance(detail, list):  # FastAPI validation errors: [{"loc": [...], "msg": ...}]
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                           if isinstance(d, dict) else str(d) for d in detail)
    if detail:
        return str(detail)
    return body.decode("utf-8", "replace").strip()[:300]


def _http_error(status: int, body: bytes, headers: Mapping[str, str], url: str, base_url: str) -> BackendError:
    if _json_detail(body) is None:  # the backend always explains itself in JSON: this is another server
        kind = (headers.get("Content-Type") or "no content type").split(";")[0]
        return BackendError(f"{base_url} answered, but it is not a UV-IDM backend (HTTP {status}, {kind}). "
                            "Check the URL and port.", status)
    detail = in_blender_words(_detail(body))
    if status in (401, 403):
        return BackendError("The backend refused the access token: set the same token in the add-on preferences "
                            "as the one the backend was started with.", status)
    if status == 404:
        return BackendError(f"The backend does not know this job or file ({detail or url}); it may have been "
                            "restarted. Generate again.", status)
    if status == 413:
        return BackendError(f"The photo is too large for the backend ({detail}). Use a smaller image.", status)
    if status == 415:
        return BackendError(f"The backend cannot read this photo: {detail}", status)
    if status in (400, 409, 422):
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


def _photo_part(photo: str | os.PathLike[str]) -> tuple[str, bytes, str]:
    photo = Path(photo)
    try:
        data = photo.read_bytes()
    except OSError as error:
        raise BackendError(f"Cannot read the photo {photo}: {error.strerror or error}.") from error
    return photo.name, data, _IMAGE_TYPES.get(photo.suffix.lower(), "application/octet-stream")


class Client:
    """One backend: `Client("http://127.0.0.1:8765", token=None)`; thread-safe (no shared state)."""

    def __init__(self, base_url: str = DEFAULT_URL, token: str | None = None, timeout: float = 10.0):
        self.base_url = normalize_url(base_url)
        self.token = token or None
        self.timeout = timeout

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                 timeout: float | None = None) -> tuple[int, bytes, Mapping[str, str]]:
        if (problem := url_problem(self.base_url)) is not None:
            raise BackendError(problem)
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
            raise _http_error(error.code, error.read() or b"", error.headers or {}, url, self.base_url) from error
        except (http.client.InvalidURL, ValueError) as error:  # what url_problem did not foresee
            raise BackendError(f"The backend URL {self.base_url} is not a valid address ({error}).") from error
        except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as error:
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

    def check_access(self) -> None:
        """Raises the token error unless this client's token opens the guarded endpoints (health is open)."""
        try:
            self._request("GET", f"/v1/jobs/{ACCESS_PROBE}", timeout=5.0)
        except BackendError as error:
            if error.status != 404:
                raise

    def faces(self, photo: str | os.PathLike[str], landmarks_file: str | os.PathLike[str] | None = None,
              timeout: float = 120.0) -> dict[str, Any]:
        """POST /v1/faces: the photo's faces (from the detector, or from the landmarks file) and an overview."""
        files = {"photo": _photo_part(photo)}
        if landmarks_file:
            path = Path(landmarks_file)
            try:
                files["landmarks_file"] = (path.name, path.read_bytes(), "application/octet-stream")
            except OSError as error:
                raise BackendError(f"Cannot read the landmarks file {path}: {error.strerror or error}.") from error
        body, form_type = encode_multipart({}, files)
        return self._json("POST", "/v1/faces", body=body, content_type=form_type, timeout=timeout)

    # -- model files (docs/API.md, "Model files") ----------------------------------------------------
    def _models(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return self._json(method, path, **kwargs)
        except BackendError as error:
            if error.status == 404:
                raise BackendError(f"The backend at {self.base_url} cannot download model files (it is older than "
                                   "the add-on). Update it, or put the files in its model folder by hand.",
                                   404) from error
            if error.status == 409:
                raise BackendError("A download of the model files is already running.", 409) from error
            raise

    def models_plan(self, revision: str = "main", timeout: float = 120.0, full_head: bool = False) -> dict[str, Any]:
        """GET /v1/models/plan: the files a download fetches (name, size), their total and the licence text."""
        query = urllib.parse.urlencode({"revision": revision, "full_head": "true" if full_head else "false"})
        return self._models("GET", f"/v1/models/plan?{query}", timeout=timeout)

    def start_model_download(self, revision: str = "main", full_head: bool = False) -> None:
        """POST /v1/models/download (202); the user has accepted the licences the plan showed."""
        body = json.dumps({"accept_licences": True, "revision": revision, "full_head": full_head}).encode()
        self._models("POST", "/v1/models/download", body=body, content_type="application/json")

    def cancel_model_download(self) -> None:
        """DELETE /v1/models/download; a download that has already ended (409) needs no cancel."""
        try:
            self._json("DELETE", "/v1/models/download")
        except BackendError as error:
            if error.status != 409:
                raise

    def submit(self, photo: str | os.PathLike[str], options: JobOptions | None = None,
               timeout: float = 120.0) -> dict[str, Any]:
        """POST the photo; returns the job (state 'queued')."""
        body, form_type = encode_multipart((options or JobOptions()).form_fields(), {"photo": _photo_part(photo)})
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
    if health.get("device_warning"):
        version = f"{version} (a GPU is not used: {health['device_warning']})"
    if state == "ready" and models.get("compiling"):
        return (f"{version}: ready{queue_text}; jobs get faster once the network is compiled, a minute or two "
                "after start-up.")
    if state == "ready":
        return f"{version}: ready{queue_text}."
    if state == "loading":
        return f"{version}: loading the models, wait a moment."
    if state == "missing":
        count = len(models.get("missing") or [])
        return (f"{version}: {count or 'some'} model file{'s' if count != 1 else ''} missing; click Download Model "
                "Files in the add-on preferences.")
    if state == "downloading":
        return f"{version}: {describe_download(models.get('download'))}"
    if state == "failed":
        return (f"{version}: the models failed to load ({models.get('error') or 'no details'}). "
                "Check the model folder in the add-on preferences.")
    return f"{version}: models {state or 'unknown'}."


def describe_job(job: Mapping[str, Any], progress: float | None = None) -> str:
    """A job's state in words: 'Queued (2 ahead)', 'Running: diffusion (40%)', 'Failed: ...'.

    `progress`: the fraction to show instead of the backend's (the add-on's bar adds upload and download)."""
    state = job.get("state")
    if state == "queued":
        position = job.get("queue_position")
        return f"Queued ({position} ahead)" if position else "Queued"
    if state == "running":
        stage = job.get("stage") or "working"
        fraction = float(job.get("progress") or 0) if progress is None else progress
        return f"Running: {stage} ({round(100 * fraction)}%)"
    if state == "failed":
        return f"Failed: {in_blender_words(job.get('error') or 'no details from the backend')}"
    if state == "cancelled":
        return "Cancelled"
    if state == "done":
        return "Done"
    return str(state)


def describe_download(download: Mapping[str, Any] | None, fraction: float | None = None) -> str:
    """health's models.download in words: 'Downloading ldm.ckpt: 1.2 GB of 4.0 GB (30%)', 'The download failed: ...'.

    `fraction`: the share to show instead of done/total (what the add-on's bar shows)."""
    if not download:
        return "no download"
    state = download.get("state")
    done, total = int(download.get("done_bytes") or 0), int(download.get("total_bytes") or 0)
    if state == "running":
        if not total:
            return "Preparing the download (listing the files)"
        what = download.get("file") or "the model files"
        share = done / total if fraction is None else fraction
        return f"Downloading {what}: {size_text(done)} of {size_text(total)} ({round(100 * share)}%)"
    if state == "done":
        return "The model files are downloaded."
    if state == "cancelled":
        return "The download was cancelled; what was finished is kept and the rest resumes next time."
    return f"The download failed: {in_blender_words(download.get('error') or 'no details')}"


def size_text(size: int | float) -> str:
    """Bytes for people: '950 KB', '1.2 GB'."""
    size = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB") else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
