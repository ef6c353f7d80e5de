"""The add-on in Blender (the `bpy` module, headless): registration and preferences."""

import sys

import pytest

bpy = pytest.importorskip("bpy")

OPERATORS = ("generate", "cancel_generate", "find_faces", "pick_face", "import_result", "import_recent",
             "delete_result", "export_game", "check_backend", "setup_environment", "cancel_setup", "start_backend",
             "stop_backend")
PANELS = ("VIEW3D_PT_uvidm", "VIEW3D_PT_uvidm_advanced", "VIEW3D_PT_uvidm_results", "VIEW3D_PT_uvidm_export")


def _registered() -> bool:
    operators = all(hasattr(bpy.types, f"UVIDM_OT_{name}") for name in OPERATORS)
    panels = all(hasattr(bpy.types, name) for name in PANELS)
    assert operators == panels, "operators and panels must come and go together"
    return operators and hasattr(bpy.types.Scene, "uvidm") and hasattr(bpy.types.WindowManager, "uvidm")


def test_register_and_unregister_twice(addon):
    import addon_utils

    module = sys.modules[addon]
    assert _registered()
    for _ in range(2):
        module.unregister()
        assert not _registered()
        module.unregister()  # a second unregister is harmless
        module.register()
        module.register()  # and so is a second register
        assert _registered()
    for _ in range(2):
        addon_utils.disable(addon, default_set=True)
        assert not _registered()
        addon_utils.enable(addon, default_set=True)
        assert _registered()
    # the File > Import entry is there once, however often the add-on was registered
    draw_funcs = bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()
    assert sum(getattr(f, "__name__", "") == "_menu_import" for f in draw_funcs) == 1


def test_panel_is_in_the_sidebar(addon):
    panel = bpy.types.VIEW3D_PT_uvidm
    assert (panel.bl_space_type, panel.bl_region_type, panel.bl_category) == ("VIEW_3D", "UI", "UV-IDM")


def test_preferences_defaults_and_values(scene, addon, tmp_path):
    prefs = bpy.context.preferences.addons[addon].preferences
    assert prefs.backend_mode == "LOCAL" and prefs.port == 8765 and prefs.device == "AUTO"
    assert prefs.torch_spec == "torch==2.13.0" and prefs.torch_build == "AUTO"
    preferences = sys.modules[f"{addon}.uvidm_blender.preferences"]
    assert preferences.backend_url(prefs) == "http://127.0.0.1:8765"
    # the environment and results live in the extension's user folder
    user = preferences.user_folder()
    assert user.is_dir() and preferences.venv_dir() == user / "venv"
    assert preferences.results_root(prefs) == user / "results"
    assert preferences.model_root(prefs) == user / "models"  # nothing to type for the model files
    assert not preferences.environment_ready()

    prefs.backend_mode = "REMOTE"
    prefs.remote_url = "gpu-box.invalid:9000/"
    prefs.token = "secret"
    client = preferences.make_client(prefs)
    assert (client.base_url, client.token) == ("http://gpu-box.invalid:9000", "secret")
    prefs.results_folder = str(tmp_path)
    assert preferences.results_root(prefs) == tmp_path

    prefs.backend_mode = "CUSTOM_PYTHON"
    prefs.python_path = str(tmp_path / "no-python")
    prefs.port = 8999
    assert preferences.backend_url(prefs) == "http://127.0.0.1:8999"
    assert preferences.make_client(prefs).token is None  # the token is for remote backends only
    with pytest.raises(preferences.BackendError, match="does not exist"):
        preferences.start_local_backend(prefs)


def test_check_backend_in_words(scene, addon):
    """No backend running, no environment: the check says so and what to do."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bpy.context.preferences.addons[addon].preferences.port = port
    with pytest.raises(RuntimeError, match="not set up"):
        bpy.ops.uvidm.check_backend()
    runtime = sys.modules[f"{addon}.uvidm_blender.runtime"]
    assert "No UV-IDM backend answers" in runtime.STATE.backend_text


def test_check_backend_reports_a_running_backend(scene, addon, backend):
    prefs = bpy.context.preferences.addons[addon].preferences
    prefs.port = backend.port
    assert bpy.ops.uvidm.check_backend() == {"FINISHED"}
    runtime = sys.modules[f"{addon}.uvidm_blender.runtime"]
    assert runtime.STATE.backend_text.startswith(f"{backend.url}: UV-IDM backend ")
    assert runtime.STATE.backend_text.endswith("on cpu: ready; 0 of 16 queue places taken.")
    assert runtime.STATE.health["device"] == "cpu"


def test_check_backend_finds_a_wrong_token(scene, addon, start_backend):
    """Health answers without a token; the check asks where the token counts."""
    guarded = start_backend(token="s3cret")
    prefs = bpy.context.preferences.addons[addon].preferences
    prefs.backend_mode, prefs.remote_url, prefs.token = "REMOTE", guarded.url, "wrong"
    runtime = sys.modules[f"{addon}.uvidm_blender.runtime"]
    with pytest.raises(RuntimeError, match="refused the access token"):
        bpy.ops.uvidm.check_backend()
    assert runtime.STATE.backend_ok is False
    prefs.token = "s3cret"
    assert bpy.ops.uvidm.check_backend() == {"FINISHED"} and runtime.STATE.backend_ok


def test_switching_to_remote_stops_the_local_backend(scene, addon, tmp_path):
    runtime = sys.modules[f"{addon}.uvidm_blender.runtime"]
    backend = sys.modules[f"{addon}.uvidm_blender.backend"]
    runtime.STATE.backend.start([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "log.txt",
                                port=9999)
    assert runtime.STATE.backend.running
    prefs = bpy.context.preferences.addons[addon].preferences
    prefs.backend_mode = "REMOTE"
    assert not runtime.STATE.backend.running
    assert isinstance(runtime.STATE.backend, backend.BackendProcess)


def test_remote_needs_online_access(scene, addon):
    prefs = bpy.context.preferences.addons[addon].preferences
    prefs.backend_mode = "REMOTE"
    prefs.remote_url = "http://gpu-box.invalid:8765"  # loopback URLs need no online access
    if bpy.app.online_access:
        pytest.skip("online access is allowed in this Blender")
    with pytest.raises(RuntimeError, match="Online access is off"):
        bpy.ops.uvidm.check_backend()
    with pytest.raises(RuntimeError, match="allow online access"):
        bpy.ops.uvidm.setup_environment()
