"""Download Model Files (issue 14, item 7) against a real `uvidm serve` started without model files and
the hub stand-in on loopback (tests/hub_standin.py through HF_ENDPOINT): the plan with sizes and the
licence text, the checkbox, the download and its progress, Cancel, a failed download and its resume,
the set-up steps' state, and the first head after it."""

import sys

import pytest

bpy = pytest.importorskip("bpy")

from blender.layout import RecordingLayout, _calls, _draw, _labels  # noqa: E402  (needs bpy)
from hub_standin import HubStandIn, release_files  # noqa: E402

from uvidm_backend.registry import HUB_REPOSITORY  # noqa: E402


@pytest.fixture
def hub(release, detector_zip):
    with HubStandIn(HUB_REPOSITORY, release_files(release), detector_zip=detector_zip) as standin:
        yield standin


@pytest.fixture
def empty_backend(start_backend, hub, tmp_path, addon):
    """`uvidm serve` on an empty model folder, downloading from the hub stand-in; the add-on uses it."""
    env = {**hub.env(), "HF_HUB_CACHE": str(tmp_path / "hub-cache"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    live = start_backend(models=tmp_path / "models", wait_for="missing", env=env)
    prefs = bpy.context.preferences.addons[addon].preferences
    prefs.port, prefs.results_folder = live.port, str(tmp_path / "results")
    return live


def _module(addon, name):
    return sys.modules[f"{addon}.uvidm_blender.{name}"]


def _prefs_log(addon) -> list:
    log: list = []
    prefs = bpy.context.preferences.addons[addon].preferences
    _module(addon, "preferences").draw_preferences(prefs, bpy.context, RecordingLayout(log))
    return log


def test_first_run_from_missing_files_to_a_head(scene, addon, empty_backend, photo, tmp_path):
    assert bpy.ops.uvidm.check_backend() == {"FINISHED"}  # missing files: a warning, not an error
    runtime = _module(addon, "runtime")
    assert "model files missing; click Download Model Files" in runtime.STATE.backend_text
    log = _draw(bpy.types.VIEW3D_PT_uvidm)
    assert "Set-up: the model files are missing (ldm.ckpt, " in " ".join(_labels(log))
    assert _calls(log, "preferences.addon_show")
    assert "2. Model Files" in _labels(_prefs_log(addon)) and ("operator", "uvidm.plan_models") in _prefs_log(addon)

    assert bpy.ops.uvidm.plan_models() == {"FINISHED"}
    plan = runtime.STATE.model_plan
    assert plan["repository"] == HUB_REPOSITORY and plan["total_bytes"] > 100_000_000
    assert not bpy.ops.uvidm.download_models.poll()  # not before the licences are accepted
    log = _prefs_log(addon)
    text = " ".join(_labels(log))
    client = _module(addon, "client")
    assert f"{len(plan['files'])} files from {HUB_REPOSITORY} (main), {client.size_text(plan['total_bytes'])} in all:" \
        in _labels(log)
    ldm = next(item for item in plan["files"] if item["name"] == "ldm.ckpt")
    assert f"ldm.ckpt: {client.size_text(ldm['size'])}" in _labels(log)
    assert "buffalo_l: size not known yet" in _labels(log)
    for line in plan["licences"].split():  # every word of the licence text is shown (wrapped)
        assert line in text
    assert ("prop", "accept_licences") in log

    bpy.context.window_manager.uvidm.accept_licences = True
    assert bpy.ops.uvidm.download_models.poll()
    assert bpy.ops.uvidm.download_models() == {"FINISHED"}, runtime.STATE.model_download.error
    download = runtime.STATE.model_download
    assert download.done and download.progress == 1.0 and download.error is None
    assert runtime.STATE.model_plan is None and runtime.STATE.health["models"]["state"] == "ready"
    prefs = bpy.context.preferences.addons[addon].preferences
    assert _module(addon, "preferences").models_ready(prefs)
    assert "Ready: the backend has loaded them" in _labels(_prefs_log(addon))
    assert not [label for label in _labels(_draw(bpy.types.VIEW3D_PT_uvidm)) if label.startswith("Set-up")]

    settings = scene.uvidm  # the downloaded detector finds the faces: pick the second, make its head
    settings.photo = str(photo.path)
    settings.sampler, settings.steps, settings.texture_size = "dpmpp", 2, "256"
    assert bpy.ops.uvidm.find_faces() == {"FINISHED"}, bpy.context.window_manager.uvidm.message
    assert runtime.STATE.faces[settings.faces_key()].count == 6
    bpy.ops.uvidm.pick_face(index=1)
    assert bpy.ops.uvidm.generate() == {"FINISHED"}, bpy.context.window_manager.uvidm.message
    assert (tmp_path / "results" / "t1-face2" / "head.glb").is_file() and "t1-face2" in bpy.data.objects


def test_cancel_and_resume(scene, addon, empty_backend):
    downloads, client = _module(addon, "downloads"), _module(addon, "client")
    download = downloads.ModelDownload(client.Client(empty_backend.url), poll_interval=0.05)
    download.cancel()  # at once: the DELETE follows the POST within milliseconds, long before 300 MB are in
    assert download.run() is False and "cancelled" in download.error
    assert empty_backend.models_state() == "missing"
    runtime = _module(addon, "runtime")
    runtime.STATE.model_download = download
    assert download.error in " ".join(_labels(_prefs_log(addon)))  # said in the preferences
    seen: list[tuple[str, float]] = []  # (message, progress) at each look at health: what the bar shows
    resumed = downloads.ModelDownload(client.Client(empty_backend.url), poll_interval=0.05,
                                      on_health=lambda health: seen.append((resumed.message, resumed.progress)))
    assert resumed.run() is True, resumed.error
    assert empty_backend.models_state() == "ready"
    running = [(message, progress) for message, progress in seen if message.startswith("Downloading ")]
    assert running and all(message.endswith(f"({round(100 * progress)}%)") for message, progress in running)
    assert [progress for _, progress in seen] == sorted(progress for _, progress in seen)  # never backwards
    client.Client(empty_backend.url).cancel_model_download()  # nothing runs any more: nothing to cancel


def test_a_failed_download_is_said_and_can_be_retried(scene, addon, empty_backend, hub):
    hub.cut_after["checkpoints/ldm.ckpt"] = 1_000_000  # the connection breaks after 1 MB
    bpy.ops.uvidm.plan_models()
    bpy.context.window_manager.uvidm.accept_licences = True
    with pytest.raises(RuntimeError, match="The download failed: .*ldm.ckpt"):
        bpy.ops.uvidm.download_models()
    log = _prefs_log(addon)
    assert any(label.startswith("The download failed") for label in _labels(log))
    assert ("operator", "uvidm.download_models") in log  # the plan stays: Download again
    del hub.cut_after["checkpoints/ldm.ckpt"]
    assert bpy.ops.uvidm.download_models() == {"FINISHED"}
    assert empty_backend.models_state() == "ready"


def test_the_full_head_option_adds_the_ict_files_and_their_licence_to_the_list(scene, addon, empty_backend):
    runtime = _module(addon, "runtime")
    status = bpy.context.window_manager.uvidm
    assert bpy.ops.uvidm.plan_models() == {"FINISHED"}
    assert not any("ICT FaceKit" in item["name"] for item in runtime.STATE.model_plan["files"])
    status.full_head = True  # another list: asked for again
    assert runtime.STATE.model_plan is None
    assert bpy.ops.uvidm.plan_models() == {"FINISHED"}
    plan = runtime.STATE.model_plan
    assert any("ICT FaceKit" in item["name"] for item in plan["files"]) and "MIT" in plan["licences"]
    assert ("prop", "full_head") in _prefs_log(addon)  # the choice is shown beside the licences
    status.full_head = False
