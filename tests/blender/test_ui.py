"""The panels' and preferences' draw code, run against a recording layout (headless Blender has no
UI to draw into): every property and operator they name must exist, in every state they show, and
messages are wrapped to the width they are drawn at."""

import shutil
import sys
from types import SimpleNamespace

import pytest

bpy = pytest.importorskip("bpy")

from blender.layout import RecordingLayout, _calls, _draw, _labels  # noqa: E402  (needs bpy)


def _module(addon, name):
    return sys.modules[f"{addon}.uvidm_blender.{name}"]


def test_sidebar_idle_running_and_error(scene, addon, backend, photo, result_folder, tmp_path):
    prefs = bpy.context.preferences.addons[addon].preferences
    prefs.port = backend.port
    prefs.results_folder = str(tmp_path / "results")
    shutil.copytree(result_folder, tmp_path / "results" / "t1-face3")
    log = _draw(bpy.types.VIEW3D_PT_uvidm)
    assert ("operator", "uvidm.generate") in log and "Choose a photo to generate a head" in _labels(log)
    assert ("prop", "photo") in log

    scene.uvidm.photo = str(photo.path)
    log = _draw(bpy.types.VIEW3D_PT_uvidm)
    assert "Choose a photo to generate a head" not in _labels(log)
    assert "Face: the largest" in _labels(log) and _calls(log, "uvidm.find_faces")
    # the thumbnail is loaded (background Blender hands out no icon ids, so the panel shows none)
    previews = _module(addon, "previews")
    assert any(key.startswith(f"{photo.path}:") for key in previews._collection.keys())

    runtime = _module(addon, "runtime")
    runtime.STATE.generate = SimpleNamespace(cancel=lambda: None)  # as while a Generate runs
    status = bpy.context.window_manager.uvidm
    status.progress, status.message = 0.4, "Running: diffusion (40%)"
    try:
        assert status.running
        log = _draw(bpy.types.VIEW3D_PT_uvidm)
    finally:
        runtime.STATE.generate = None
    assert ("progress", "Running: diffusion (40%)") in log and ("operator", "uvidm.cancel_generate") in log
    assert ("operator", "uvidm.generate") not in log

    status.is_error = True
    status.message = "No UV-IDM backend answers at http://127.0.0.1:8765 (refused). Start it in the add-on preferences."
    log = _draw(bpy.types.VIEW3D_PT_uvidm)
    assert " ".join(_labels(log)).split().count("preferences.") == 1  # wrapped, nothing lost

    log = _draw(bpy.types.VIEW3D_PT_uvidm_results)
    assert "t1.jpg" in _labels(log)  # the photo's name, then the date and folder
    assert any(label.endswith(" · t1-face3") and label[:4].isdigit() for label in _labels(log))
    (delete,) = _calls(log, "uvidm.delete_result")
    (import_,) = _calls(log, "uvidm.import_recent")
    assert delete[4].path == import_[4].path == str(tmp_path / "results" / "t1-face3")

    log = _draw(bpy.types.VIEW3D_PT_uvidm_advanced)
    assert ("prop", "landmarks_file") in log and ("operator", "uvidm.check_backend") in log
    assert ("operator", "uvidm.start_backend") in log and "Backend: local" in _labels(log)
    presets = [call[4].preset for call in _calls(_draw(bpy.types.VIEW3D_PT_uvidm_export), "uvidm.export_game")]
    assert presets == ["UNITY", "UNREAL", "GLTF"]


def test_found_faces_are_numbered_buttons(scene, addon, backend, photo, tmp_path):
    bpy.context.preferences.addons[addon].preferences.port = backend.port
    settings = scene.uvidm
    settings.photo, settings.landmarks_file = str(photo.path), str(photo.landmarks_file)
    assert bpy.ops.uvidm.find_faces() == {"FINISHED"}
    found = _module(addon, "runtime").STATE.faces[settings.faces_key()]
    assert found.count == 6 and found.source == "landmarks" and found.overview.is_file()
    log = _draw(bpy.types.VIEW3D_PT_uvidm)
    buttons = [(call[2], call[3], call[4].index) for call in _calls(log, "uvidm.pick_face")]
    assert buttons == [("Largest", True, -1)] + [(str(n + 1), False, n) for n in range(6)]
    assert bpy.ops.uvidm.pick_face(index=3) == {"FINISHED"} and settings.face_index == 3
    log = _draw(bpy.types.VIEW3D_PT_uvidm)
    assert [call[3] for call in _calls(log, "uvidm.pick_face")] == [False, False, False, False, True, False, False]
    # the overview is what the panel shows in place of the photo
    previews = _module(addon, "previews")
    assert any(key.startswith(f"{found.overview}:") for key in previews._collection.keys())
    settings.landmarks_file = ""  # another source of faces: the number picked on the old one no longer holds
    assert settings.face_index == -1 and "Face: the largest" in _labels(_draw(bpy.types.VIEW3D_PT_uvidm))


def test_find_faces_without_a_detector_says_what_to_do(scene, addon, backend, photo):
    bpy.context.preferences.addons[addon].preferences.port = backend.port
    scene.uvidm.photo = str(photo.path)
    with pytest.raises(RuntimeError, match="buffalo_l.*Download Model Files.*landmarks file"):
        bpy.ops.uvidm.find_faces()
    assert bpy.context.window_manager.uvidm.is_error


@pytest.mark.parametrize("width", [291, 400])
def test_messages_wrap_to_the_region_width(scene, addon, width):
    text = _module(addon, "text")
    message = ("The backend could not make this head: the face detector buffalo_l is missing (looked in "
               "/home/artist/.config/blender/4.3/extensions/user_default/uvidm/models/weights/insightface/models/"
               "buffalo_l): get it with Download Model Files (add-on preferences), or choose a landmarks file.")
    bpy.context.window_manager.uvidm.message = message
    bpy.context.window_manager.uvidm.is_error = True
    scene.uvidm.photo = "//photo.jpg"
    context = SimpleNamespace(**{name: getattr(bpy.context, name) for name in
                                 ("scene", "window_manager", "preferences")}, region=SimpleNamespace(width=width))
    lines = [label for label in _labels(_draw(bpy.types.VIEW3D_PT_uvidm, context)) if label and label in message]
    measure, room = text.ui_measure(context), text.label_width(context)
    assert room == width - text.LABEL_MARGIN
    assert measure("abc") > 0  # the UI font measures, also headless
    assert all(measure(line) <= room for line in lines)
    assert "".join(lines).replace(" ", "") == message.replace(" ", "")  # every word, the long path split
    assert len(lines) > (3 if width == 291 else 2)


@pytest.mark.parametrize("mode", ["LOCAL", "CUSTOM_PYTHON", "REMOTE"])
def test_preferences_draw(scene, addon, mode):
    preferences = _module(addon, "preferences")
    prefs = bpy.context.preferences.addons[addon].preferences
    prefs.backend_mode = mode
    log: list = []
    preferences.draw_preferences(prefs, bpy.context, RecordingLayout(log))
    operators = {entry[1] for entry in log if entry[0] == "operator"}
    assert "uvidm.check_backend" in operators
    assert ("uvidm.start_backend" in operators) == (mode != "REMOTE")
    assert ("uvidm.setup_environment" in operators) == (mode == "LOCAL")
    steps = [label for label in _labels(log) if label[:2] in ("1.", "2.", "3.")]
    assert steps == {"LOCAL": ["1. Python Environment", "2. Model Files", "3. Backend"],
                     "CUSTOM_PYTHON": ["1. Python", "2. Model Files", "3. Backend"],
                     "REMOTE": ["1. Remote Backend", "2. Model Files (on the remote backend)"]}[mode]
    if mode == "LOCAL":
        torch_line = next(label for label in _labels(log) if label.startswith("Torch: "))
        assert "because" in torch_line  # what it chose, and why
        assert ("prop", "torch_build") in log


def test_preferences_while_setting_up(scene, addon):
    preferences, runtime, backend = (_module(addon, name) for name in ("preferences", "runtime", "backend"))
    prefs = bpy.context.preferences.addons[addon].preferences
    runner = backend.CommandRunner([backend.Step("wait", (sys.executable, "-c", "import time; time.sleep(30)"))])
    runner.message = "Installing torch==2.13.0 (a large download) (3/5)"
    runtime.STATE.setup = runner
    runner.start()
    try:
        log: list = []
        preferences.draw_preferences(prefs, bpy.context, RecordingLayout(log))
        assert ("progress", runner.message) in log and ("operator", "uvidm.cancel_setup") in log
    finally:
        runner.cancel()
        runner.join(10)
    log = []
    preferences.draw_preferences(prefs, bpy.context, RecordingLayout(log))
    assert any(label.startswith("Setup failed: Cancelled") for label in _labels(log))
    runtime.STATE.setup = None


def test_stale_backend_words_are_not_shown(scene, addon, backend):
    prefs = bpy.context.preferences.addons[addon].preferences
    prefs.port = backend.port
    assert bpy.ops.uvidm.check_backend() == {"FINISHED"}
    ready = _module(addon, "runtime").STATE.backend_text
    assert ready == " ".join(_labels(_draw(bpy.types.VIEW3D_PT_uvidm_advanced))[1:])  # wrapped, after the mode
    assert "Runs on: cpu" in _labels(_draw(bpy.types.VIEW3D_PT_uvidm))
    prefs.backend_mode = "REMOTE"  # another backend: the old answer is not about it
    log = _draw(bpy.types.VIEW3D_PT_uvidm_advanced)
    assert not [label for label in _labels(log) if "ready" in label]
    prefs.backend_mode = "LOCAL"
    prefs.port = backend.port + 1
    assert not [label for label in _labels(_draw(bpy.types.VIEW3D_PT_uvidm_advanced)) if "ready" in label]


def test_setup_missing_opens_the_preferences(scene, addon):
    log = _draw(bpy.types.VIEW3D_PT_uvidm)
    assert "Set-up: the backend's Python environment is not installed yet." in " ".join(_labels(log))
    (button,) = _calls(log, "preferences.addon_show")
    assert button[4].module == addon


def test_the_panel_warns_about_an_unused_gpu(scene, addon, backend):
    prefs = bpy.context.preferences.addons[addon].preferences
    prefs.port = backend.port
    assert bpy.ops.uvidm.check_backend() == {"FINISHED"}
    runtime = _module(addon, "runtime")
    assert runtime.STATE.health["device_warning"] is None  # no GPU on this machine: nothing to warn about
    runtime.STATE.health = {**runtime.STATE.health, "device_warning": "an NVIDIA GPU is present but this torch "
                                                                     "(2.13.0+cpu) is a CPU-only build"}
    labels = " ".join(_labels(_draw(bpy.types.VIEW3D_PT_uvidm)))
    assert "Runs on: cpu" in labels and "A GPU is not used: an NVIDIA GPU is present" in labels
