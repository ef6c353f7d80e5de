"""Fixtures for the add-on's tests: a stand-in backend speaking the HTTP API on loopback, result
folders built with trimesh, and Blender (the `bpy` module from PyPI, headless) with the add-on
enabled as an extension from a development repository that links to this checkout."""

from __future__ import annotations

import atexit
import email.parser
import email.policy
import io
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # the extension root: blender_manifest.toml, __init__.py
# The add-on is not part of the installed backend package: import it from the checkout (as
# `python -m pytest` from the root does anyway), also when pytest is started another way.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
ADDON_REPO = "uvidm_dev"
ADDON_MODULE = f"bl_ext.{ADDON_REPO}.uvidm"

# Blender reads its user folders at import: keep this session's preferences, extension repositories
# and the add-on's user folder out of the developer's own Blender configuration.
if "bpy" not in sys.modules and "BLENDER_USER_RESOURCES" not in os.environ:
    _user_resources = tempfile.mkdtemp(prefix="uvidm-blender-user-")
    atexit.register(shutil.rmtree, _user_resources, ignore_errors=True)
    os.environ["BLENDER_USER_RESOURCES"] = _user_resources


# --------------------------------------------------------------------------------------------
# Result folders (docs/API.md, "Output folder")

TEXTURE_COLOURS = ((220, 40, 30), (30, 60, 220))  # left / right half of the albedo: easy to find in a render


def build_result_folder(folder: Path, photo_name: str = "portrait.jpg", texture_size: int = 64) -> Path:
    """A small stand-in result: a UV-mapped sphere of head size (metres, +Y up, glTF conventions),
    albedo.png in two colours, head.obj/head.mtl, head.glb (trimesh), preview.png and result.json."""
    import numpy as np
    import trimesh
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sphere = trimesh.creation.uv_sphere(radius=0.1, count=[12, 16])  # about a head: 20 cm across
    vertices = np.asarray(sphere.vertices)[:, [0, 2, 1]] * [1, 1, -1]  # z-up sphere -> +Y up
    faces = np.asarray(sphere.faces)
    # Spherical UVs: u follows the angle around the vertical axis, v the height.
    u = (np.arctan2(vertices[:, 0], vertices[:, 2]) / (2 * np.pi) + 0.5).clip(0, 1)
    v = (vertices[:, 1] / 0.2 + 0.5).clip(0, 1)
    uvs = np.stack([u, v], axis=1)

    albedo = np.zeros((texture_size, texture_size, 3), np.uint8)
    albedo[:, : texture_size // 2] = TEXTURE_COLOURS[0]
    albedo[:, texture_size // 2:] = TEXTURE_COLOURS[1]
    Image.fromarray(albedo).save(folder / "albedo.png")
    Image.fromarray(albedo[::4, ::4]).save(folder / "albedo_model.png")
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(folder / "preview.png")

    lines = ["# UV-IDM test head", "mtllib head.mtl", "o head"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"vt {a:.6f} {b:.6f}" for a, b in uvs]
    lines.append("usemtl skin")
    lines += ["f " + " ".join(f"{i + 1}/{i + 1}" for i in face) for face in faces]
    (folder / "head.obj").write_text("\n".join(lines) + "\n")
    (folder / "head.mtl").write_text("newmtl skin\nKd 1 1 1\nmap_Kd albedo.png\n")

    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(albedo), roughnessFactor=0.6)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=False,
                           visual=trimesh.visual.TextureVisuals(uv=uvs, material=material))
    (folder / "head.glb").write_bytes(trimesh.exchange.gltf.export_glb(trimesh.Scene(mesh)))

    (folder / "result.json").write_text(json.dumps({
        "version": "test", "photo": {"name": photo_name, "size": [640, 480], "sha256": "0" * 64},
        "face": {"index": 0, "box": [0, 0, 1, 1], "landmarks": []}, "options": {"texture_size": texture_size},
        "files": {name: name for name in ("head.glb", "head.obj", "albedo.png")},
    }))
    return folder


@pytest.fixture
def result_folder(tmp_path) -> Path:
    return build_result_folder(tmp_path / "portrait")


@pytest.fixture
def make_result_folder():
    """build_result_folder(folder, photo_name=..., texture_size=...) for tests that need several."""
    return build_result_folder


# --------------------------------------------------------------------------------------------
# A stand-in backend: the HTTP API of docs/API.md, with knobs for the error paths.

@dataclass
class FakeBackend:
    """`url` answers like `uvidm serve`. Knobs: models_state, polls_until_done, fail_with, hang,
    queue_full (429 answers before accepting), token. Records: submissions, deleted, requests."""

    result_dir: Path | None = None
    models_state: str = "ready"
    polls_until_done: int = 2
    fail_with: str | None = None
    hang: bool = False
    queue_full: int = 0
    token: str | None = None
    submissions: list[dict] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    jobs: dict[str, dict] = field(default_factory=dict)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def job_view(self, job_id: str, advance: bool = True) -> dict:
        """The job as GET answers it; each poll (`advance`) moves it one step towards the end."""
        job = self.jobs[job_id]
        if advance and job["state"] in ("queued", "running") and not self.hang:
            job["polls"] += 1
            if job["polls"] >= self.polls_until_done:
                if self.fail_with:
                    job.update(state="failed", error=self.fail_with, finished="2026-01-01T00:00:01Z")
                else:
                    job.update(state="done", progress=1.0, stage=None, finished="2026-01-01T00:00:01Z",
                               files=sorted(p.name for p in self.result_dir.iterdir()))
            else:
                job.update(state="running", stage="diffusion", progress=job["polls"] / self.polls_until_done)
        return {k: v for k, v in job.items() if k != "polls"}


def _handler(backend: FakeBackend):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest's output clean
            pass

        def _send(self, status: int, body: object = None, headers: dict | None = None, raw: bytes | None = None):
            data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if backend.token and self.headers.get("Authorization") != f"Bearer {backend.token}":
                self._send(401, {"detail": "missing or wrong token"})
                return False
            return True

        def _route(self, method: str):
            backend.requests.append((method, self.path))
            if not self._authorized():
                return
            parts = self.path.strip("/").split("/")
            with backend.lock:
                if method == "GET" and parts == ["v1", "health"]:
                    return self._send(200, {"version": "fake", "device": "cpu", "queue_length": len(backend.jobs),
                                            "queue_capacity": 8, "models": {"state": backend.models_state,
                                                                            "error": None, "loaded": []}})
                if method == "POST" and parts == ["v1", "jobs"]:
                    return self._submit()
                if len(parts) >= 3 and parts[:2] == ["v1", "jobs"]:
                    job_id = parts[2]
                    if job_id not in backend.jobs:
                        return self._send(404, {"detail": f"no job {job_id}"})
                    if method == "GET" and len(parts) == 3:
                        return self._send(200, backend.job_view(job_id))
                    if method == "DELETE" and len(parts) == 3:
                        backend.deleted.append(job_id)
                        job = backend.jobs[job_id]
                        if job["state"] in ("done", "failed", "cancelled"):
                            del backend.jobs[job_id]
                            return self._send(204)
                        job.update(state="cancelled", finished="2026-01-01T00:00:01Z")
                        return self._send(200, backend.job_view(job_id, advance=False))
                    if method == "GET" and len(parts) == 5 and parts[3] == "files":
                        file = backend.result_dir / parts[4] if backend.result_dir else None
                        if file is None or not file.is_file():
                            return self._send(404, {"detail": f"no file {parts[4]}"})
                        return self._send(200, raw=file.read_bytes())
            return self._send(404, {"detail": "not found"})

        def _submit(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {self.headers.get('Content-Type')}\r\n\r\n".encode() + body)
            form, photo = {}, None
            for part in message.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if part.get_filename():
                    photo = (part.get_filename(), part.get_payload(decode=True))
                else:
                    form[name] = part.get_payload(decode=True).decode()
            if photo is None:
                return self._send(422, {"detail": [{"loc": ["body", "photo"], "msg": "Field required"}]})
            if backend.queue_full > 0:
                backend.queue_full -= 1
                return self._send(429, {"detail": "queue full"}, headers={"Retry-After": "0.1"})
            backend.submissions.append({"form": form, "photo": photo})
            job_id = secrets.token_urlsafe(8)
            backend.jobs[job_id] = {"id": job_id, "state": "queued", "stage": None, "progress": 0.0,
                                    "queue_position": 0, "error": None, "created": "2026-01-01T00:00:00Z",
                                    "finished": None, "options": form, "files": [], "polls": 0}
            return self._send(202, backend.job_view(job_id, advance=False))

        def do_GET(self):
            self._route("GET")

        def do_POST(self):
            self._route("POST")

        def do_DELETE(self):
            self._route("DELETE")

    return Handler


@pytest.fixture
def fake_backend(tmp_path):
    backend = FakeBackend(result_dir=build_result_folder(tmp_path / "served"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(backend))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    backend.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield backend
    server.shutdown()
    server.server_close()


@pytest.fixture
def photo(tmp_path) -> Path:
    """A small JPEG to upload (the stand-in backend does not look at it)."""
    from PIL import Image

    path = tmp_path / "portrait.jpg"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 150, 120)).save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue())
    return path


# --------------------------------------------------------------------------------------------
# Blender with the add-on enabled

@pytest.fixture(scope="session")
def addon():
    """Enable the add-on as Blender does for an installed extension (`bl_ext.<repo>.uvidm`), from a
    development repository whose `uvidm` entry links to this checkout; yields the module name."""
    bpy = pytest.importorskip("bpy")
    import addon_utils

    repo_dir = Path(tempfile.mkdtemp(prefix="uvidm-dev-repo-"))
    (repo_dir / "uvidm").symlink_to(ROOT, target_is_directory=True)
    repo = bpy.context.preferences.extensions.repos.new(
        name="uvidm-dev", module=ADDON_REPO, custom_directory=str(repo_dir), source="USER")
    module = addon_utils.enable(ADDON_MODULE, default_set=True, handle_error=_raise)
    assert module is not None, "the add-on did not enable"
    yield ADDON_MODULE
    addon_utils.disable(ADDON_MODULE, default_set=True, handle_error=_raise)
    bpy.context.preferences.extensions.repos.remove(repo)
    shutil.rmtree(repo_dir, ignore_errors=True)


def _raise(error: BaseException) -> None:
    raise error


@pytest.fixture
def scene(addon):
    """An empty scene, the add-on's preferences back to their defaults, nothing running."""
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    prefs = bpy.context.preferences.addons[addon].preferences
    for name in ("backend_mode", "python_path", "port", "remote_url", "token", "model_folder", "device",
                 "results_folder", "torch_spec", "index_url"):
        prefs.property_unset(name)
    yield bpy.context.scene
    sys.modules[f"{addon}.uvidm_blender.runtime"].STATE.shutdown()


@pytest.fixture
def render():
    """render(scene, path, camera_location, light_energy=None) -> RGB PIL image (`render_frame`)."""
    return render_frame


def render_frame(scene, path: Path, camera_location, light_energy: float | None = None):
    """Renders one 64x64 frame with Cycles on the CPU (4 samples), the camera at `camera_location`
    looking along +Y and a sun from above-front; returns it as an RGB PIL image."""
    import math

    import bpy
    from PIL import Image

    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(camera)
    camera.location = camera_location
    camera.rotation_euler = (math.radians(90), 0.0, 0.0)
    scene.camera = camera
    light = bpy.data.objects.new("light", bpy.data.lights.new("light", "SUN"))
    light.rotation_euler = (math.radians(80), 0.0, 0.0)
    if light_energy is not None:
        light.data.energy = light_energy
    scene.collection.objects.link(light)
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 4
    scene.render.resolution_x = scene.render.resolution_y = 64
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return Image.open(path).convert("RGB")
