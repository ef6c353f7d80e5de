"""The Generate operator in background mode (synchronous) against the stand-in backend."""

import json
import socket
import sys
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _prefs(addon):
    return bpy.context.preferences.addons[addon].preferences


def _use(addon, backend, tmp_path):
    prefs = _prefs(addon)
    prefs.port = int(backend.url.rsplit(":", 1)[1])  # something answers there: the add-on uses it
    prefs.results_folder = str(tmp_path / "results")


def _status():
    return bpy.context.window_manager.uvidm


def test_generate_imports_the_head(scene, addon, fake_backend, photo, tmp_path):
    _use(addon, fake_backend, tmp_path)
    settings = scene.uvidm
    settings.photo = str(photo)
    settings.sampler = "dpmpp"
    assert settings.steps == 20  # the default steps follow the sampler
    settings.steps, settings.seed, settings.texture_size = 12, 5, "512"
    settings.sampler = "ddim"
    assert settings.steps == 12  # chosen steps stay
    settings.delight, settings.expression = True, "neutral"
    settings.landmarks = "[[10, 12], [30, 12], [20, 22], [12, 32], [28, 32]]"
    assert bpy.ops.uvidm.generate() == {"FINISHED"}

    form = fake_backend.submissions[0]["form"]
    assert form == {"steps": "12", "sampler": "ddim", "seed": "5", "texture_size": "512", "delight": "true",
                    "expression": "neutral",
                    "landmarks": json.dumps([[10.0, 12.0], [30.0, 12.0], [20.0, 22.0], [12.0, 32.0], [28.0, 32.0]])}
    assert "face_index" not in form  # -1: the backend picks the largest face
    result = tmp_path / "results" / "portrait"
    assert sorted(p.name for p in result.iterdir()) == sorted(p.name for p in fake_backend.result_dir.iterdir())
    head = bpy.data.objects["portrait"]
    assert head.type == "MESH" and [c.name for c in head.users_collection] == ["UV-IDM"]
    assert Path(bpy.path.abspath(head.data.materials[0].node_tree.nodes["Image Texture"].image.filepath)) == \
        result / "albedo.png"
    status = _status()
    assert not status.running and not status.is_error and status.progress == 1.0
    assert status.last_result == str(result) and status.message.startswith("Imported portrait")


def test_face_index_is_sent(scene, addon, fake_backend, photo, tmp_path):
    _use(addon, fake_backend, tmp_path)
    scene.uvidm.photo = str(photo)
    scene.uvidm.face_index = 2
    bpy.ops.uvidm.generate()
    assert fake_backend.submissions[0]["form"]["face_index"] == "2"


def _assert_refused(match: str, scene_before: set) -> None:
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.uvidm.generate()
    assert set(bpy.data.objects) == scene_before and "UV-IDM" not in bpy.data.collections
    assert _status().is_error and not _status().running


def test_backend_down_leaves_the_scene_unchanged(scene, addon, photo, tmp_path):
    scene.uvidm.photo = str(photo)
    bpy.ops.mesh.primitive_cube_add()
    before = set(bpy.data.objects)
    prefs = _prefs(addon)
    prefs.port = _free_port()
    # local: nothing on the port and no environment to start a backend from
    _assert_refused("Python environment is not set up yet.*Set Up Environment", before)
    # remote: nothing answers at the URL
    prefs.backend_mode = "REMOTE"
    prefs.remote_url = f"127.0.0.1:{_free_port()}"
    bpy.context.preferences.system.use_online_access = True
    try:
        _assert_refused(r"No UV-IDM backend answers at http://127\.0\.0\.1:\d+ .*Start it", before)
    finally:
        bpy.context.preferences.system.use_online_access = False
    assert _status().message.startswith("No UV-IDM backend answers")


def test_backend_that_dies_on_start_is_reported(scene, addon, photo, tmp_path):
    """Own Python whose backend exits at once: the error says so (with the log) instead of waiting."""
    script = tmp_path / "python"
    script.write_text(f"#!{sys.executable}\nimport sys\nprint('unknown option --port', file=sys.stderr)\n"
                      "sys.exit(2)\n")
    script.chmod(0o755)
    prefs = _prefs(addon)
    prefs.backend_mode, prefs.python_path, prefs.port = "CUSTOM_PYTHON", str(script), _free_port()
    scene.uvidm.photo = str(photo)
    _assert_refused(r"The local backend stopped \(exit code 2\): unknown option --port", set(bpy.data.objects))


def test_backend_errors_in_words(scene, addon, fake_backend, photo, tmp_path):
    _use(addon, fake_backend, tmp_path)
    scene.uvidm.photo = str(photo)
    fake_backend.fail_with = "no face found in the photo"
    _assert_refused("The backend could not make this head: no face found in the photo", set(bpy.data.objects))
    fake_backend.fail_with = None
    fake_backend.models_state = "failed"
    _assert_refused("could not load its models.*model folder", set(bpy.data.objects))


@pytest.mark.parametrize("photo_value, landmarks, match", [
    ("", "", "Choose a photo first"),
    ("//missing.jpg", "", "does not exist"),
    (None, "[[1, 2]]", "five"),
])
def test_bad_input_is_refused_before_any_request(scene, addon, fake_backend, photo, tmp_path,
                                                  photo_value, landmarks, match):
    _use(addon, fake_backend, tmp_path)
    scene.uvidm.photo = str(photo) if photo_value is None else photo_value
    scene.uvidm.landmarks = landmarks
    _assert_refused(match, set(bpy.data.objects))
    assert fake_backend.requests == []


def test_cancel_frees_a_stuck_panel(scene, addon):
    status = _status()
    assert not bpy.ops.uvidm.cancel_generate.poll()
    status.running = True  # as if a Generate had ended without cleaning up
    assert bpy.ops.uvidm.cancel_generate() == {"FINISHED"}
    assert not status.running and status.message == "Cancelled"
    assert bpy.ops.uvidm.generate.poll()
