"""Photo to rendered head through the real backend: the add-on starts `uvidm serve` itself (local
mode with this Python) on the devtools model folder of random weights, Generate runs in background mode,
the head is imported and rendered with Cycles."""

import json
import sys
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
LANDMARKS = ROOT.parent / "shared" / "fixtures" / "landmarks.json"
PHOTO = "t1.jpg"  # the group photo that ships with insightface


@pytest.fixture
def photo_and_landmarks() -> tuple[Path, Path]:
    insightface = pytest.importorskip("insightface")
    photo = Path(insightface.__file__).parent / "data" / "images" / PHOTO
    if not photo.is_file() or not LANDMARKS.is_file():
        pytest.skip(f"needs {PHOTO} (insightface) and {LANDMARKS}")
    faces = json.loads(LANDMARKS.read_text())[PHOTO]["faces"]
    assert faces
    return photo, LANDMARKS


def test_photo_to_rendered_head(scene, addon, model_folder, photo_and_landmarks, tmp_path, render):
    import socket

    photo, landmarks = photo_and_landmarks
    prefs = bpy.context.preferences.addons[addon].preferences
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    prefs.backend_mode = "CUSTOM_PYTHON"  # the add-on starts `uvidm serve` with this Python
    prefs.python_path = sys.executable
    prefs.port = port
    prefs.model_folder = str(model_folder)
    prefs.device = "cpu"
    prefs.results_folder = str(tmp_path / "results")
    settings = scene.uvidm
    settings.photo = str(photo)
    settings.landmarks_file = str(landmarks)  # the largest face's points are taken from it
    settings.sampler = "dpmpp"
    settings.steps = 2
    settings.texture_size = "256"

    runtime = sys.modules[f"{addon}.uvidm_blender.runtime"]
    try:
        assert bpy.ops.uvidm.generate() == {"FINISHED"}, bpy.context.window_manager.uvidm.message
        assert runtime.STATE.backend.running
        assert bpy.ops.uvidm.check_backend() == {"FINISHED"}
        assert "on cpu: ready" in runtime.STATE.backend_text, runtime.STATE.backend_text
        log = "\n".join(runtime.STATE.backend.log_tail(40))
    finally:
        runtime.STATE.backend.stop()

    (result,) = (tmp_path / "results").iterdir()  # named after the photo and the largest face of the file
    assert result.name.startswith(f"{photo.stem}-face")
    assert (result / "head.obj").is_file() and (result / "albedo.png").is_file(), log
    meta = json.loads((result / "result.json").read_text())
    assert meta["photo"]["name"] == photo.name and meta["options"]["steps"] == 2
    assert meta["options"]["sampler"] == "dpmpp"
    head = bpy.data.objects[result.name]
    obj_vertices = sum(line.startswith("v ") for line in (result / "head.obj").read_text().splitlines())
    assert len(head.data.vertices) == obj_vertices and head.data.uv_layers
    image = head.data.materials[0].node_tree.nodes["Image Texture"].image
    assert tuple(image.size) == (256, 256) and image.colorspace_settings.name == "sRGB"
    world = [head.matrix_world @ v.co for v in head.data.vertices]
    height = max(v.z for v in world) - min(v.z for v in world)
    assert 0.1 < height < 0.5  # a head, in metres

    # Render it: camera in front (the face looks towards -Y), Cycles on the CPU, a few samples.
    centre = sum(world, start=world[0] * 0) / len(world)
    frame = render(scene, tmp_path / "frame.png", (centre.x, centre.y - 4 * height, centre.z))
    covered = sum(max(frame.getpixel((x, y))) > 10 for x in range(16, 48) for y in range(16, 48))
    assert covered > 300, "the head should fill the middle of the frame"
