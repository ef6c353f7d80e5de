"""The panels' and preferences' draw code, run against a recording layout (headless Blender has no
UI to draw into): every property and operator they name must exist, in every state they show."""

import sys

import pytest

bpy = pytest.importorskip("bpy")


class _OperatorProperties:
    def __init__(self, idname: str):
        module, name = idname.split(".")
        self._names = set(getattr(getattr(bpy.ops, module), name).get_rna_type().properties.keys())

    def __setattr__(self, name, value):
        if not name.startswith("_"):
            assert name in self._names, f"operator has no property {name!r}"
        object.__setattr__(self, name, value)


class RecordingLayout:
    """Enough of bpy.types.UILayout; checks what it is given and records labels, operators, bars."""

    def __init__(self, log: list):
        self.log = log
        self.enabled = True
        self.scale_y = 1.0
        self.use_property_split = False
        self.use_property_decorate = True

    def _child(self, *args, **kwargs):
        return RecordingLayout(self.log)

    row = column = box = split = _child

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"{data} has no property {name!r}"
        self.log.append(("prop", name))

    def label(self, text="", icon="NONE", icon_value=0):
        assert icon in bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items
        self.log.append(("label", text))

    def operator(self, idname, text="", icon="NONE", **kwargs):
        module, name = idname.split(".")
        assert getattr(getattr(bpy.ops, module), name).poll is not None
        _OperatorProperties(idname)  # the operator exists
        self.log.append(("operator", idname))
        return _OperatorProperties(idname)

    def progress(self, factor=0.0, type="BAR", text=""):
        assert 0.0 <= factor <= 1.0 and type == "BAR"
        self.log.append(("progress", text))

    def template_icon(self, icon_value=0, scale=1.0):
        self.log.append(("icon", icon_value))


class _Panel:
    def __init__(self, layout):
        self.layout = layout


def _draw(panel_class) -> list:
    log: list = []
    panel_class.draw(_Panel(RecordingLayout(log)), bpy.context)
    return log


def test_sidebar_idle_running_and_error(scene, addon, photo, result_folder, tmp_path):
    import shutil

    prefs = bpy.context.preferences.addons[addon].preferences
    prefs.results_folder = str(tmp_path / "results")
    shutil.copytree(result_folder, tmp_path / "results" / "portrait")
    scene.uvidm.photo = str(photo)
    log = _draw(bpy.types.VIEW3D_PT_uvidm)
    assert ("operator", "uvidm.generate") in log
    # the thumbnail is loaded (background Blender hands out no icon ids, so the panel shows none)
    previews = sys.modules[f"{addon}.uvidm_blender.previews"]
    assert (64, 48) in [tuple(p.image_size) for p in previews._collection.values()]

    status = bpy.context.window_manager.uvidm
    status.running, status.progress, status.message = True, 0.4, "Running: diffusion (40%)"
    log = _draw(bpy.types.VIEW3D_PT_uvidm)
    assert ("progress", "Running: diffusion (40%)") in log and ("operator", "uvidm.cancel_generate") in log
    assert ("operator", "uvidm.generate") not in log

    status.running, status.is_error = False, True
    status.message = "No UV-IDM backend answers at http://127.0.0.1:8765 (refused). Start it in the add-on preferences."
    log = _draw(bpy.types.VIEW3D_PT_uvidm)
    labels = " ".join(text for kind, text in log if kind == "label")
    assert "No UV-IDM backend answers" in labels and "preferences." in labels  # wrapped, nothing lost

    log = _draw(bpy.types.VIEW3D_PT_uvidm_results)
    assert ("label", "portrait") in log and ("operator", "uvidm.import_recent") in log
    for panel in (bpy.types.VIEW3D_PT_uvidm_advanced, bpy.types.VIEW3D_PT_uvidm_export):
        assert _draw(panel)


@pytest.mark.parametrize("mode", ["LOCAL", "CUSTOM_PYTHON", "REMOTE"])
def test_preferences_draw(scene, addon, mode):
    preferences = sys.modules[f"{addon}.uvidm_blender.preferences"]
    runtime = sys.modules[f"{addon}.uvidm_blender.runtime"]
    prefs = bpy.context.preferences.addons[addon].preferences
    prefs.backend_mode = mode
    log: list = []
    preferences.draw_preferences(prefs, bpy.context, RecordingLayout(log))
    operators = {value for kind, value in log if kind == "operator"}
    assert "uvidm.check_backend" in operators
    assert ("uvidm.start_backend" in operators) == (mode != "REMOTE")
    assert ("uvidm.setup_environment" in operators) == (mode == "LOCAL")

    if mode == "LOCAL":  # while the environment is being set up: a progress bar and Cancel
        backend = sys.modules[f"{addon}.uvidm_blender.backend"]
        runner = backend.CommandRunner([backend.Step("wait", (sys.executable, "-c", "import time; time.sleep(30)"))])
        runner.message = "Installing torch==2.13.0 (a large download) (3/5)"
        runtime.STATE.setup = runner
        runner.start()
        try:
            log = []
            preferences.draw_preferences(prefs, bpy.context, RecordingLayout(log))
            assert ("progress", runner.message) in log and ("operator", "uvidm.cancel_setup") in log
        finally:
            runner.cancel()
            runner.join(10)
            runtime.STATE.setup = None
