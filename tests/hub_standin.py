"""A hub stand-in on loopback: the part of the Hugging Face Hub's HTTP API that huggingface_hub uses to
list a repository and download its files, plus GitHub's raw file host and insightface's release asset.

Tests point `HF_ENDPOINT` at `standin.url`, `UVIDM_GITHUB_RAW` at `standin.url + "/raw"` and
`UVIDM_INSIGHTFACE_URL` at `standin.detector_url`. Files are served from disk with Range support;
`cut_after[path] = n` makes every GET of that file stop after n bytes (a broken connection),
`missing_raw` hides the GitHub copy. `requests` records (method, path, Range header) of every request.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "5e1f0c3a9b2d4e6f8a0b1c2d3e4f5a6b7c8d9e0f"


class HubStandIn:
    def __init__(self, repository: str, files: dict[str, Path], *, raw: dict[str, Path] | None = None,
                 detector_zip: Path | None = None, revisions: tuple[str, ...] = ("main",)):
        self.repository = repository
        self.files = dict(files)  # path in the repository -> file on disk
        self.raw = dict(raw or {})  # "owner/repo/commit/path" -> file on disk
        self.detector_zip = detector_zip
        self.revisions = revisions
        self.cut_after: dict[str, int] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self._digests: dict[Path, str] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def detector_url(self) -> str:
        return f"{self.url}/insightface/buffalo_l.zip"

    def env(self) -> dict[str, str]:
        return {"HF_ENDPOINT": self.url, "UVIDM_GITHUB_RAW": f"{self.url}/raw",
                "UVIDM_INSIGHTFACE_URL": self.detector_url, "HF_HUB_DISABLE_TELEMETRY": "1"}

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def digest(self, path: Path) -> str:
        if path not in self._digests:
            self._digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        return self._digests[path]

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self._route(body=False)

            def do_GET(self) -> None:
                self._route(body=True)

            def _route(self, body: bool) -> None:
                path = unquote(urlparse(self.path).path)
                standin.requests.append((self.command, path, self.headers.get("Range")))
                repo = re.escape(standin.repository)
                if match := re.fullmatch(rf"/api/models/{repo}/revision/([^/]+)", path):
                    return self._info(match.group(1))
                if match := re.fullmatch(rf"/api/models/{repo}/tree/([^/]+)(/.*)?", path):
                    return self._tree(match.group(1), (match.group(2) or "").strip("/"))
                if match := re.fullmatch(rf"/{repo}/resolve/([^/]+)/(.+)", path):
                    return self._resolve(match.group(1), match.group(2), body)
                if path.startswith("/api/models/") or "/resolve/" in path:
                    return self._error(404, "RepoNotFound", "Repository not found")
                if path.startswith("/raw/") and path[5:] in standin.raw:
                    return self._send_file(standin.raw[path[5:]], body, path[5:])
                if path == "/insightface/buffalo_l.zip" and standin.detector_zip is not None:
                    return self._send_file(standin.detector_zip, body, "buffalo_l.zip")
                self._error(404, None, "Not Found")

            def _known_revision(self, revision: str) -> bool:
                if revision in standin.revisions or revision == COMMIT:
                    return True
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return False

            def _info(self, revision: str) -> None:
                if self._known_revision(revision):
                    self._json({"id": standin.repository, "modelId": standin.repository, "sha": COMMIT,
                                "private": False, "siblings": [{"rfilename": p} for p in sorted(standin.files)]})

            def _tree(self, revision: str, folder: str) -> None:
                if not self._known_revision(revision):
                    return
                entries, folders = [], set()
                for path, local in sorted(standin.files.items()):
                    if folder and not path.startswith(folder + "/"):
                        continue
                    parts = path.split("/")
                    for depth in range(1, len(parts)):
                        folders.add("/".join(parts[:depth]))
                    size = local.stat().st_size
                    entries.append({"type": "file", "oid": standin.digest(local)[:40], "size": size, "path": path,
                                    "lfs": {"oid": standin.digest(local), "size": size, "pointerSize": 134}})
                entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": f} for f in sorted(folders)]
                self._json(entries)

            def _resolve(self, revision: str, path: str, body: bool) -> None:
                if not self._known_revision(revision):
                    return
                if path not in standin.files:
                    return self._error(404, "EntryNotFound", f"{path} does not exist")
                self._send_file(standin.files[path], body, path, hub=True)

            def _send_file(self, local: Path, body: bool, name: str, hub: bool = False) -> None:
                size = local.stat().st_size
                start = 0
                if (ranged := self.headers.get("Range")) and (match := re.fullmatch(r"bytes=(\d+)-", ranged)):
                    start = int(match.group(1))
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                self.send_response(206 if start else 200)
                if hub:
                    self.send_header("X-Repo-Commit", COMMIT)
                    self.send_header("ETag", f'"{standin.digest(local)}"')
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.send_header("Content-Length", str(size - start))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if not body:
                    return
                with open(local, "rb") as file:
                    file.seek(start)
                    limit = standin.cut_after.get(name)
                    remaining = size - start if limit is None else max(0, min(size - start, limit - start))
                    while remaining > 0:
                        block = file.read(min(1 << 20, remaining))
                        self.wfile.write(block)
                        remaining -= len(block)
                if limit is not None and limit < size:
                    self.close_connection = True
                    self.connection.shutdown(2)

            def _json(self, payload) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _error(self, status: int, code: str | None, message: str) -> None:
                data = json.dumps({"error": message}).encode()
                self.send_response(status)
                if code:
                    self.send_header("X-Error-Code", code)
                    self.send_header("X-Error-Message", message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

        return Handler


def release_files(root: Path) -> dict[str, Path]:
    """Every file under an official-layout folder, by its path in the repository."""
    return {path.relative_to(root).as_posix(): path for path in sorted(root.rglob("*")) if path.is_file()}


def detector_archive(folder: Path) -> Path:
    """insightface's buffalo_l.zip as its release lays it out, holding the stand-in models that find the faces
    of the sample photo t1.jpg (devtools.face_models)."""
    import zipfile

    from pipeline.photos import fixture_landmarks, sample_photo

    from uvidm_backend.devtools.face_models import known_faces, write_face_models
    from uvidm_backend.pipeline.images import load_photo

    models = write_face_models(folder / "buffalo_l", load_photo(sample_photo("t1.jpg")).pixels,
                               known_faces(fixture_landmarks(), "t1.jpg"))
    archive = folder / "buffalo_l.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for model in sorted(models.glob("*.onnx")):
            zipped.write(model, model.name)
    return archive
