"""The Generate operator in background mode (synchronous) against a real `uvidm serve` on loopback."""

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
from blender.live import LONG_STEPS, SMALL_JOB, free_port

bpy = pytest.importorskip("bpy")


def _prefs(addon):
    return bpy.context.preferences.addons[addon].preferences


def _use(addon, backend, tmp_path):
    prefs = _prefs(addon)
    prefs.port = backend.port  # something answers there: the add-on uses it
    prefs.results_folder = str(tmp_path / "results")


def _status():
    return bpy.context.window_manager.uvidm


def _small(settings, photo, face_index=-1):
    settings.photo = str(photo.path)
    settings.landmarks_file = str(photo.landmarks_file)
    settings.face_index = face_index
    settings.sampler, settings.steps, settings.texture_size = SMALL_JOB["sampler"], SMALL_JOB["steps"], "256"


def _job_count(backend) -> int:
    folder = backend.workdir / "jobs"
    return len([p for p in folder.iterdir() if p.is_dir()]) if folder.is_dir() else 0


def test_generate_places_names_and_selects_the_head(scene, addon, backend, photo, tmp_path):
    _use(addon, backend, tmp_path)
    bpy.ops.mesh.primitive_cube_add(size=2.0)  # the default scene's cube, 2 m at the origin
    cube = bpy.context.active_object
    settings = scene.uvidm
    settings.sampler = "dpmpp"
    assert settings.steps == 20  # the default steps follow the sampler
    settings.steps = 12
    settings.sampler = "ddim"
    assert settings.steps == 12  # chosen steps stay
    _small(settings, photo, face_index=2)  # the third face from the left, its points from the landmarks file
    settings.seed, settings.expression = 5, "neutral"
    assert bpy.ops.uvidm.generate() == {"FINISHED"}, _status().message

    result = tmp_path / "results" / "t1-face3"
    meta = json.loads((result / "result.json").read_text())
    client = sys.modules[f"{addon}.uvidm_blender.client"].Client(backend.url)
    third = client.faces(photo.path, photo.landmarks_file)["faces"][2]["points"]  # what Find Faces shows as 3
    assert meta["face"]["index"] == 2 and meta["options"]["seed"] == 5 and meta["options"]["steps"] == 2
    sent = [value for point in meta["face"]["landmarks"] for value in point]
    assert sent == pytest.approx([value for point in third for value in point], abs=0.01)  # face 3's points
    head = bpy.data.objects["t1-face3"]
    assert head.type == "MESH" and [c.name for c in head.users_collection] == ["UV-IDM"]
    assert Path(bpy.path.abspath(head.data.materials[0].node_tree.nodes["Image Texture"].image.filepath)) == \
        result / "albedo.png"
    # beside the cube, not inside it; selected and active
    low = min((head.matrix_world @ v.co).x for v in head.data.vertices)
    assert low > max((cube.matrix_world @ v.co).x for v in cube.data.vertices)
    assert head.select_get() and not cube.select_get() and bpy.context.view_layer.objects.active == head
    status = _status()
    assert not status.running and not status.is_error and status.progress == 1.0
    assert status.last_result == str(result) and status.message.startswith("Imported t1-face3 beside the scene")

    assert bpy.ops.uvidm.generate() == {"FINISHED"}
    second = bpy.data.objects["t1-face3-2"]  # a second head of the same face: its own name and folder
    assert (tmp_path / "results" / "t1-face3-2" / "head.obj").is_file()
    assert min((second.matrix_world @ v.co).x for v in second.data.vertices) > \
        max((head.matrix_world @ v.co).x for v in head.data.vertices)  # and beside the first one


def test_both_heads_with_the_official_look_are_imported_side_by_side(scene, addon, backend, photo, tmp_path):
    _use(addon, backend, tmp_path)
    settings = scene.uvidm
    _small(settings, photo, face_index=0)
    settings.texture_look, settings.head_kind = "official", "both"
    assert bpy.ops.uvidm.generate() == {"FINISHED"}, _status().message
    result = tmp_path / "results" / "t1-face1"
    meta = json.loads((result / "result.json").read_text())
    assert meta["texture"]["albedo"] == "official" and meta["options"]["head"] == "both"
    face, full = bpy.data.objects["t1-face1"], bpy.data.objects["t1-face1 full head"]
    assert face["uvidm_file"] == "head.obj" and full["uvidm_file"] == "head_full.glb"
    assert len(full.data.shape_keys.key_blocks) == 54  # the basis and the 53 ARKit shapes
    assert min((full.matrix_world @ v.co).x for v in full.data.vertices) > \
        max((face.matrix_world @ v.co).x for v in face.data.vertices)  # beside it, not inside it


def _assert_refused(match: str, scene_before: set) -> None:
    with pytest.raises(RuntimeError, match=match):
        bpy.ops.uvidm.generate()
    assert set(bpy.data.objects) == scene_before and "UV-IDM" not in bpy.data.collections
    assert _status().is_error and not _status().running


def test_backend_down_leaves_the_scene_unchanged(scene, addon, photo, tmp_path):
    scene.uvidm.photo = str(photo.path)
    bpy.ops.mesh.primitive_cube_add()
    before = set(bpy.data.objects)
    prefs = _prefs(addon)
    prefs.port = free_port()
    # local: nothing on the port and no environment to start a backend from
    _assert_refused("Python environment is not set up yet.*Set Up Environment", before)
    # remote on this computer: online access (off in tests) is not needed, nothing answers there
    prefs.backend_mode = "REMOTE"
    prefs.remote_url = f"127.0.0.1:{free_port()}"
    assert not bpy.app.online_access
    _assert_refused(r"No UV-IDM backend answers at http://127\.0\.0\.1:\d+ .*Start it", before)
    # remote elsewhere: online access is
    prefs.remote_url = "http://gpu-box.invalid:8765"
    _assert_refused("Online access is off", before)


def test_backend_that_dies_on_start_is_reported(scene, addon, photo, tmp_path):
    """Own Python whose backend exits at once: the error says so (with the log) instead of waiting."""
    script = tmp_path / "python"
    script.write_text(f"#!{sys.executable}\nimport sys\nprint('unknown option --port', file=sys.stderr)\n"
                      "sys.exit(2)\n")
    script.chmod(0o755)
    prefs = _prefs(addon)
    prefs.backend_mode, prefs.python_path, prefs.port = "CUSTOM_PYTHON", str(script), free_port()
    scene.uvidm.photo = str(photo.path)
    _assert_refused(r"The local backend stopped \(exit code 2\): unknown option --port", set(bpy.data.objects))


def test_backend_errors_in_blender_words(scene, addon, backend, start_backend, model_folder, photo, tmp_path):
    _use(addon, backend, tmp_path)
    scene.uvidm.photo = str(photo.path)  # no landmarks: the detector is needed, and the test folder has none
    _assert_refused(r"The backend could not make this head: .*buffalo_l.*Download Model Files",
                    set(bpy.data.objects))
    assert "--landmarks" not in _status().message

    broken = Path(shutil.copytree(model_folder, tmp_path / "broken"))
    (broken / "weights" / "ldm.ckpt").write_bytes(b"not a checkpoint")
    failed = start_backend(models=broken, wait_for="failed")
    _prefs(addon).port = failed.port
    _assert_refused("could not load its models.*model folder", set(bpy.data.objects))


@pytest.mark.parametrize("photo_value, landmarks_value, match", [
    ("", None, "Choose a photo first"),
    ("//missing.jpg", None, "does not exist"),
    (None, "//missing.json", "landmarks file .* does not exist"),
])
def test_bad_input_is_refused_before_any_request(scene, addon, backend, photo, tmp_path,
                                                  photo_value, landmarks_value, match):
    _use(addon, backend, tmp_path)
    before = _job_count(backend)
    scene.uvidm.photo = str(photo.path) if photo_value is None else photo_value
    scene.uvidm.landmarks_file = landmarks_value or ""
    _assert_refused(match, set(bpy.data.objects))
    assert _job_count(backend) == before


def _running_job(addon, backend, photo, tmp_path):
    """A long Generate started as the modal operator starts it (a thread), running on the backend."""
    jobs = sys.modules[f"{addon}.uvidm_blender.jobs"]
    client = sys.modules[f"{addon}.uvidm_blender.client"]
    job = jobs.GenerateJob(client.Client(backend.url), photo.path,
                           client.JobOptions(landmarks=tuple(map(tuple, photo.landmarks)), steps=LONG_STEPS,
                                             texture_size=256), tmp_path / "results", poll_interval=0.05)
    sys.modules[f"{addon}.uvidm_blender.runtime"].STATE.generate = job
    job.start()
    deadline = time.monotonic() + 60
    while job.drain().state != "running":
        assert time.monotonic() < deadline, job.last
        time.sleep(0.05)
    return job


def test_disable_and_enable_during_a_generate_leaves_generate_usable(scene, addon, backend, photo, tmp_path):
    import addon_utils

    _use(addon, backend, tmp_path)
    job = _running_job(addon, backend, photo, tmp_path)
    assert _status().running and not bpy.ops.uvidm.generate.poll()
    addon_utils.disable(addon, default_set=True)
    addon_utils.enable(addon, default_set=True)
    assert not _status().running and bpy.ops.uvidm.generate.poll() and not bpy.ops.uvidm.cancel_generate.poll()
    job.join(30)
    assert job.drain().state == "cancelled"
    assert backend.request("GET", f"/v1/jobs/{job.job_id}")[1]["cancel_requested"]
    _use(addon, backend, tmp_path)  # Blender forgets a disabled add-on's preferences
    _small(scene.uvidm, photo)
    assert bpy.ops.uvidm.generate() == {"FINISHED"}, _status().message  # and Generate works again


def test_cancel_frees_the_panel_at_once(scene, addon, backend, photo, tmp_path):
    _use(addon, backend, tmp_path)
    assert not bpy.ops.uvidm.cancel_generate.poll()
    job = _running_job(addon, backend, photo, tmp_path)
    assert bpy.ops.uvidm.cancel_generate() == {"FINISHED"}
    assert not _status().running and _status().message == "Cancelled" and bpy.ops.uvidm.generate.poll()
    job.join(30)
    assert job.drain().state == "cancelled"


@pytest.fixture(scope="module")
def detector_models(model_folder, photo, tmp_path_factory):
    """The devtools model folder with stand-in buffalo_l files that find t1.jpg's six faces for real
    (insightface's detector code on ONNX networks; devtools.face_models)."""
    import numpy as np
    from PIL import Image

    from uvidm_backend.devtools.face_models import known_faces, write_face_models

    folder = Path(shutil.copytree(model_folder, tmp_path_factory.mktemp("detector") / "models"))
    faces = known_faces(json.loads(photo.landmarks_file.read_text()), "t1.jpg")
    pixels = np.asarray(Image.open(photo.path).convert("RGB"))
    write_face_models(folder / "weights" / "insightface" / "models" / "buffalo_l", pixels, faces)
    return folder


def test_find_faces_with_the_detector_then_generate_the_picked_one(scene, addon, start_backend, detector_models,
                                                                     photo, tmp_path):
    detecting = start_backend(models=detector_models)
    _use(addon, detecting, tmp_path)
    settings = scene.uvidm
    _small(settings, photo)
    settings.landmarks_file = ""  # the detector finds the faces
    assert bpy.ops.uvidm.find_faces() == {"FINISHED"}, _status().message
    found = sys.modules[f"{addon}.uvidm_blender.runtime"].STATE.faces[settings.faces_key()]
    assert (found.count, found.source) == (6, "detector") and found.overview.is_file()
    assert _status().message == "6 faces found: click a number to choose one."
    bpy.ops.uvidm.pick_face(index=1)
    assert bpy.ops.uvidm.generate() == {"FINISHED"}, _status().message
    meta = json.loads((tmp_path / "results" / "t1-face2" / "result.json").read_text())
    assert meta["face"]["index"] == 1 and meta["face"]["source"] == "detected"
    assert "t1-face2" in bpy.data.objects
