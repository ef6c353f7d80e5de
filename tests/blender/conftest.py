"""Fixtures for the add-on's tests: a real `uvidm serve` on loopback (the devtools model folder of random
weights, on the CPU), results it made, a real photo with its landmarks, and Blender (the `bpy` module
from PyPI, headless) with the add-on enabled as an extension from a development repository that
links to this checkout."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from blender.live import LiveBackend, Photo, run_job

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
# A real backend: `uvidm serve` in a subprocess on a free loopback port

@pytest.fixture(scope="session")
def model_folder(tmp_path_factory) -> Path:
    """The devtools model folder (random weights in the official formats, the synthetic ICT head), as
    `python -m uvidm_backend.devtools.model_folder DIR --full-head` writes it."""
    folder = tmp_path_factory.mktemp("models")
    done = subprocess.run([sys.executable, "-m", "uvidm_backend.devtools.model_folder", str(folder), "--full-head"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder


@pytest.fixture(scope="session")
def backend(model_folder, tmp_path_factory):
    """One `uvidm serve` for the session, no token (as the add-on's local backend runs)."""
    live = LiveBackend(model_folder, tmp_path_factory.mktemp("serve")).start()
    yield live
    live.stop()


@pytest.fixture
def start_backend(model_folder, tmp_path):
    """start_backend(token=None, options=(), models=None, wait_for="ready", env=None) for a backend of its own."""
    started: list[LiveBackend] = []

    def start(token: str | None = None, options: tuple[str, ...] = (), models: Path | None = None,
              wait_for: str = "ready", env: dict[str, str] | None = None) -> LiveBackend:
        live = LiveBackend(models or model_folder, tmp_path / f"serve-{len(started)}", token=token, options=options,
                           env=env or {})
        started.append(live)
        return live.start(wait_for)

    yield start
    for live in started:
        live.stop()


@pytest.fixture(scope="session")
def photo() -> Photo:
    """insightface's t1.jpg (six faces) with the fixtures' landmarks: jobs need no face detector."""
    from pipeline.photos import fixture_landmarks, fixtures_dir, sample_photo

    faces = fixture_landmarks()["t1.jpg"]["faces"]
    return Photo(sample_photo("t1.jpg"), faces[0]["lm5"], fixtures_dir() / "landmarks.json")


@pytest.fixture(scope="session")
def served_result(backend, photo, tmp_path_factory) -> Path:
    """A result folder made by the real backend (head.glb, head.obj, albedo.png, preview.png, ...)."""
    return run_job(backend, photo, tmp_path_factory.mktemp("served") / "t1")


@pytest.fixture
def result_folder(served_result, tmp_path) -> Path:
    """A fresh copy of the backend's result, for a test to import or change."""
    return Path(shutil.copytree(served_result, tmp_path / "t1"))


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
                 "results_folder", "torch_spec", "torch_build", "index_url"):
        prefs.property_unset(name)
    state = sys.modules[f"{addon}.uvidm_blender.runtime"].STATE
    state.backend_text, state.backend_key, state.health, state.health_key = "", (), None, ()
    state.faces.clear()
    bpy.context.window_manager.uvidm.property_unset("message")
    bpy.context.window_manager.uvidm.property_unset("last_result")
    yield bpy.context.scene
    state.shutdown()


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
