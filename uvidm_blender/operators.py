"""Operators: Generate (modal, polls a worker thread), Cancel, Import, Export for game engines, and
the backend's Check / Set Up / Start / Stop. Network and subprocess work never runs on the main
thread in the UI; in background mode (no UI) the same operators run synchronously."""

# No `from __future__ import annotations` here: Blender reads the property annotations.

import os
import threading
from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from .backend import EXTENSION_ROOT, CommandRunner, blender_python, setup_steps, stage_backend_source
from .client import BackendError, Client, describe_health
from .importer import import_result
from .jobs import GenerateJob, JobEvent
from .preferences import (
    READY_MARK,
    backend_died,
    backend_log,
    check_online,
    describe_local_environment,
    get_preferences,
    make_client,
    results_root,
    snapshot,
    start_local_backend,
    user_folder,
    venv_dir,
)
from .results import ResultError
from .runtime import STATE

TIMER_STEP = 0.1  # seconds between two looks at a worker thread


def _redraw_all() -> None:
    """Redraw the sidebar and the preferences (they show progress)."""
    wm = bpy.context.window_manager
    for window in wm.windows if wm else ():
        for area in window.screen.areas if window.screen else ():
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def _set_status(context, message: str, *, progress: float | None = None, running: bool | None = None,
                error: bool = False) -> None:
    status = context.window_manager.uvidm
    status.message = message
    status.is_error = error
    if progress is not None:
        status.progress = progress
    if running is not None:
        status.running = running


class UVIDM_OT_generate(bpy.types.Operator):
    """Make a textured head from the photo (the backend does the work; Esc cancels)"""

    bl_idname = "uvidm.generate"
    bl_label = "Generate Head"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return not context.window_manager.uvidm.running

    def _fail(self, context, message: str):
        _set_status(context, message, progress=0.0, running=False, error=True)
        self.report({"ERROR"}, message)
        return {"CANCELLED"}

    def _prepare(self, context) -> GenerateJob | str:
        """The job, or a message saying what the user must do first."""
        settings = context.scene.uvidm
        prefs = get_preferences(context)
        if not settings.photo:
            return "Choose a photo first (Photo, in the UV-IDM panel)."
        photo = bpy.path.abspath(settings.photo)
        if not os.path.isfile(photo):
            return f"The photo {photo} does not exist; choose another one."
        try:
            options = settings.job_options()
        except ValueError as error:
            return str(error)
        try:
            check_online(prefs)
            wait = start_local_backend(prefs)
        except BackendError as error:
            return error.message
        return GenerateJob(make_client(prefs), photo, options, results_root(prefs), wait_for_backend=wait,
                           backend_died=backend_died)

    def execute(self, context):
        # Synchronous: background mode and scripts (bpy.ops.uvidm.generate()).
        job = self._prepare(context)
        if isinstance(job, str):
            return self._fail(context, job)
        STATE.generate = job
        _set_status(context, "Generating", progress=0.0, running=True)
        return self._finish(context, job.run())

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        job = self._prepare(context)
        if isinstance(job, str):
            return self._fail(context, job)
        STATE.generate = job
        _set_status(context, "Connecting to the backend", progress=0.0, running=True)
        job.start()
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_STEP, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = STATE.generate
        if job is None:
            return self._finish(context, JobEvent("cancelled", "Cancelled", 0.0))
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()  # the worker sends the DELETE; the scene is left as it was
            return self._finish(context, JobEvent("cancelled", "Cancelled", 0.0))
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        if job.cancelled:
            return self._finish(context, JobEvent("cancelled", "Cancelled", 0.0))
        latest = job.drain()
        if latest.final:
            return self._finish(context, latest)
        _set_status(context, latest.message, progress=latest.progress)
        _redraw_all()
        return {"PASS_THROUGH"}

    def _finish(self, context, event: JobEvent):
        if getattr(self, "_timer", None) is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        STATE.generate = None
        _redraw_all()
        if event.state == "cancelled":
            _set_status(context, "Cancelled", progress=0.0, running=False)
            self.report({"WARNING"}, "Generate cancelled")
            return {"CANCELLED"}
        if event.state != "done":
            return self._fail(context, event.message)
        try:
            obj = import_result(context, event.result_dir)
        except (ResultError, OSError, ValueError, RuntimeError) as error:
            return self._fail(context, f"The head was made ({event.result_dir}) but cannot be imported: {error}")
        context.window_manager.uvidm.last_result = str(event.result_dir)
        _set_status(context, f"Imported {obj.name} ({event.result_dir})", progress=1.0, running=False)
        self.report({"INFO"}, f"Imported {obj.name}")
        return {"FINISHED"}


class UVIDM_OT_cancel_generate(bpy.types.Operator):
    """Stop the running Generate (the backend drops the job)"""

    bl_idname = "uvidm.cancel_generate"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return STATE.generate is not None or context.window_manager.uvidm.running

    def execute(self, context):
        if STATE.generate is not None:
            STATE.generate.cancel()  # the modal Generate sees it on its next timer tick
            _set_status(context, "Cancelling")
        else:  # nothing runs any more (the Generate ended abnormally): free the panel
            _set_status(context, "Cancelled", progress=0.0, running=False)
        return {"FINISHED"}


def _import(operator, context, path: str):
    try:
        obj = import_result(context, bpy.path.abspath(path))
    except (ResultError, OSError, ValueError, RuntimeError) as error:
        operator.report({"ERROR"}, f"Cannot import {path}: {error}")
        return {"CANCELLED"}
    operator.report({"INFO"}, f"Imported {obj.name}")
    return {"FINISHED"}


class UVIDM_OT_import_result(bpy.types.Operator, ImportHelper):
    """Import a UV-IDM head: a result folder, its head.obj, head.glb or result.json"""

    bl_idname = "uvidm.import_result"
    bl_label = "Import UV-IDM Head"
    bl_options = {"REGISTER", "UNDO", "PRESET"}

    filter_glob: StringProperty(default="*.glb;*.obj;*.json", options={"HIDDEN"})

    def execute(self, context):
        return _import(self, context, self.filepath)


class UVIDM_OT_import_recent(bpy.types.Operator):
    """Import this result into the scene"""

    bl_idname = "uvidm.import_recent"
    bl_label = "Import"
    bl_options = {"REGISTER", "UNDO"}

    path: StringProperty(name="Result", subtype="DIR_PATH", options={"SKIP_SAVE"})

    def execute(self, context):
        return _import(self, context, self.path)


# Axis and scale conventions of the engines' importers. Unity: Y up, -Z forward, scale baked into the
# mesh so the object comes in unrotated at scale 1. Unreal: the FBX's unit (metres in, centimetres
# written) and Y-up axes, which the importer's "Convert Scene" turns into its Z-up centimetres.
# glTF is metres and +Y up by definition; both engines' glTF importers understand it.
_FBX_COMMON = dict(use_selection=True, object_types={"MESH"}, path_mode="COPY", embed_textures=True,
                   mesh_smooth_type="FACE", add_leaf_bones=False, use_mesh_modifiers=True,
                   axis_forward="-Z", axis_up="Y", apply_unit_scale=True, global_scale=1.0)
EXPORT_PRESETS = {
    "UNITY": (".fbx", dict(_FBX_COMMON, apply_scale_options="FBX_SCALE_ALL", bake_space_transform=True)),
    "UNREAL": (".fbx", dict(_FBX_COMMON, apply_scale_options="FBX_SCALE_NONE", bake_space_transform=False)),
    "GLTF": (".glb", dict(export_format="GLB", use_selection=True, export_yup=True, export_apply=True)),
}


class UVIDM_OT_export_game(bpy.types.Operator):
    """Export the selected head for a game engine (FBX with the engine's axes and scale, or glTF)"""

    bl_idname = "uvidm.export_game"
    bl_label = "Export for Game Engines"
    bl_options = {"REGISTER"}

    preset: EnumProperty(name="Target", items=[
        ("UNITY", "Unity (FBX)", "FBX: Y up, -Z forward, scale applied"),
        ("UNREAL", "Unreal (FBX)", "FBX: centimetres, axes converted by the importer"),
        ("GLTF", "glTF Binary (.glb)", "Metres, +Y up: Unity (glTFast), Unreal, Godot, web"),
    ], default="UNITY")
    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE"})
    check_existing: bpy.props.BoolProperty(default=True, options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        return any(obj.type == "MESH" for obj in context.selected_objects)

    def _extension(self) -> str:
        return EXPORT_PRESETS[self.preset][0]

    def check(self, context):
        path = Path(bpy.path.abspath(self.filepath)) if self.filepath else None
        if path is not None and path.suffix.lower() != self._extension():
            self.filepath = str(path.with_suffix(self._extension()))
            return True
        return False

    def invoke(self, context, event):
        if not self.filepath:
            folder = Path(bpy.path.abspath("//")) if bpy.data.filepath else results_root(get_preferences(context))
            name = bpy.path.clean_name(context.active_object.name if context.active_object else "head")
            self.filepath = str(folder / f"{name}_{self.preset.lower()}{self._extension()}")
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        if not self.filepath:
            self.report({"ERROR"}, "Choose a file to export to")
            return {"CANCELLED"}
        self.check(context)
        path = Path(bpy.path.abspath(self.filepath))
        path.parent.mkdir(parents=True, exist_ok=True)
        _, options = EXPORT_PRESETS[self.preset]
        if self.preset == "GLTF":
            bpy.ops.export_scene.gltf(filepath=str(path), **options)
        else:
            bpy.ops.export_scene.fbx(filepath=str(path), **options)
        self.report({"INFO"}, f"Exported {path}")
        return {"FINISHED"}


class UVIDM_OT_check_backend(bpy.types.Operator):
    """Ask the backend how it is (and check the local Python environment), in plain words"""

    bl_idname = "uvidm.check_backend"
    bl_label = "Check Backend"

    @staticmethod
    def work(snap) -> tuple[str, str]:
        """({'INFO'|'WARNING'|'ERROR'}, words); network and subprocess only, no bpy: runs in a thread."""
        try:
            check_online(snap, snap.online_access)
            health = Client(snap.url, token=snap.token if snap.backend_mode == "REMOTE" else None).health(timeout=5.0)
            state = (health.get("models") or {}).get("state")
            level = {"ready": "INFO", "failed": "ERROR"}.get(state, "WARNING")
            message = f"{snap.url}: {describe_health(health)}"
        except BackendError as error:
            level, message = "ERROR", error.message
            if snap.backend_mode != "REMOTE":
                words = describe_local_environment(snap)[1]
                running = "running" if STATE.backend.running else "not started"
                message = f"Local backend {running}. {error.message} {words}."
        STATE.backend_text = message
        STATE.backend_ok = level == "INFO"
        return level, message

    def _done(self, level: str, message: str):
        self.report({level}, message)
        return {"FINISHED"} if level != "ERROR" else {"CANCELLED"}

    def execute(self, context):
        return self._done(*self.work(snapshot(context)))

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        snap = snapshot(context)
        self._result = None

        def target():
            self._result = self.work(snap)

        self._thread = threading.Thread(target=target, name="uvidm-check", daemon=True)
        self._thread.start()
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_STEP, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type != "TIMER" or self._thread.is_alive():
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        _redraw_all()
        return self._done(*(self._result or ("ERROR", "The check stopped unexpectedly")))


class UVIDM_OT_setup_environment(bpy.types.Operator):
    """Create the backend's Python environment in the extension's user folder (downloads torch: several GB)"""

    bl_idname = "uvidm.setup_environment"
    bl_label = "Set Up Environment"

    @classmethod
    def poll(cls, context):
        return not (STATE.setup is not None and STATE.setup.running)

    def execute(self, context):
        prefs = get_preferences(context)
        if not bpy.app.online_access:
            self.report({"ERROR"}, "Setting up downloads packages: allow online access in Preferences > System > "
                                   "Network first.")
            return {"CANCELLED"}
        STATE.backend.stop()  # it may run from the environment being replaced
        venv = venv_dir()
        (venv / READY_MARK).unlink(missing_ok=True)
        try:
            source = stage_backend_source(EXTENSION_ROOT, user_folder() / "backend-source")
        except OSError as error:
            self.report({"ERROR"}, f"Cannot prepare the backend's files: {error}")
            return {"CANCELLED"}
        steps = setup_steps(blender_python(), venv, source, torch_spec=prefs.torch_spec.strip() or "torch",
                            index_url=prefs.index_url.strip())
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        runner = CommandRunner(steps, log_file=user_folder() / "setup.log", env=env,
                               on_success=lambda: (venv / READY_MARK).write_text("ok\n"))
        STATE.setup = runner
        if bpy.app.background:
            ok = runner.run()
            self.report({"INFO"} if ok else {"ERROR"}, "Environment ready" if ok else f"Setup failed: {runner.error}")
            return {"FINISHED"} if ok else {"CANCELLED"}
        runner.start()
        bpy.app.timers.register(_watch_setup, first_interval=0.5)
        self.report({"INFO"}, "Setting up the backend's environment (progress in the add-on preferences)")
        return {"FINISHED"}


def _watch_setup():
    _redraw_all()
    if STATE.setup is not None and STATE.setup.running:
        return 0.5
    return None


class UVIDM_OT_cancel_setup(bpy.types.Operator):
    """Stop setting up the environment"""

    bl_idname = "uvidm.cancel_setup"
    bl_label = "Cancel Setup"

    def execute(self, context):
        if STATE.setup is not None:
            STATE.setup.cancel()
        return {"FINISHED"}


class UVIDM_OT_start_backend(bpy.types.Operator):
    """Start the local backend (uvidm serve) in the background"""

    bl_idname = "uvidm.start_backend"
    bl_label = "Start Backend"

    def execute(self, context):
        prefs = get_preferences(context)
        try:
            start_local_backend(prefs)
        except BackendError as error:
            self.report({"ERROR"}, error.message)
            return {"CANCELLED"}
        if not STATE.backend.running:
            self.report({"INFO"}, f"A backend already answers on port {prefs.port}; using it")
        else:
            self.report({"INFO"}, f"Backend starting (log: {backend_log()}); the first start loads the models")
        _redraw_all()
        return {"FINISHED"}


class UVIDM_OT_stop_backend(bpy.types.Operator):
    """Stop the local backend the add-on started"""

    bl_idname = "uvidm.stop_backend"
    bl_label = "Stop Backend"

    def execute(self, context):
        STATE.backend.stop()
        _redraw_all()
        return {"FINISHED"}


CLASSES = (
    UVIDM_OT_generate, UVIDM_OT_cancel_generate, UVIDM_OT_import_result, UVIDM_OT_import_recent,
    UVIDM_OT_export_game, UVIDM_OT_check_backend, UVIDM_OT_setup_environment, UVIDM_OT_cancel_setup,
    UVIDM_OT_start_backend, UVIDM_OT_stop_backend,
)


def _menu_import(self, context):
    self.layout.operator(UVIDM_OT_import_result.bl_idname, text="UV-IDM Head (.glb/.obj)")


def register() -> None:
    for cls in CLASSES:
        if not getattr(cls, "is_registered", False):
            bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.remove(_menu_import)  # no duplicate entry when registered twice
    bpy.types.TOPBAR_MT_file_import.append(_menu_import)


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_import.remove(_menu_import)
    for cls in reversed(CLASSES):
        if getattr(cls, "is_registered", False):
            bpy.utils.unregister_class(cls)
