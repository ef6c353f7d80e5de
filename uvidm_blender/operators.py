"""Operators: Generate (modal, polls a worker thread), Cancel, Import, Export for game engines, and
the backend's Check / Set Up / Start / Stop. Network and subprocess work never runs on the main
thread in the UI; in background mode (no UI) the same operators run synchronously."""

# No `from __future__ import annotations` here: Blender reads the property annotations.

import base64
import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from .backend import (
    EXTENSION_ROOT,
    CommandRunner,
    blender_python,
    setup_steps,
    stage_backend_source,
    venv_problem,
)
from .client import BackendError, Client, describe_health
from .downloads import ModelDownload
from .importer import import_result
from .jobs import GenerateJob, JobEvent, wait_for_backend
from .preferences import (
    READY_MARK,
    backend_died,
    backend_key,
    backend_log,
    check_online,
    describe_local_environment,
    get_preferences,
    make_client,
    results_root,
    snapshot,
    start_local_backend,
    torch_build,
    user_folder,
    venv_dir,
)
from .results import FULL_HEAD_GLB, ResultError, is_result_folder
from .runtime import STATE, FoundFaces

TIMER_STEP = 0.1  # seconds between two looks at a worker thread


def _redraw_all() -> None:
    """Redraw the sidebar and the preferences (they show progress)."""
    wm = bpy.context.window_manager
    for window in wm.windows if wm else ():
        for area in window.screen.areas if window.screen else ():
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def _set_status(context, message: str, *, progress: float | None = None, error: bool = False) -> None:
    status = context.window_manager.uvidm
    status.message = message
    status.is_error = error
    if progress is not None:
        status.progress = progress


def _abspath(path: str) -> str:
    return bpy.path.abspath(path) if path else ""


class UVIDM_OT_generate(bpy.types.Operator):
    """Make a textured head from the photo (the backend does the work; Esc cancels)"""

    bl_idname = "uvidm.generate"
    bl_label = "Generate Head"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return not context.window_manager.uvidm.running

    def _fail(self, context, message: str):
        _set_status(context, message, progress=0.0, error=True)
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
        landmarks = _abspath(settings.landmarks_file)
        if landmarks and not os.path.isfile(landmarks):
            return f"The landmarks file {landmarks} does not exist; choose another one or clear the field."
        try:
            check_online(prefs)
            wait = start_local_backend(prefs)
        except BackendError as error:
            return error.message
        return GenerateJob(make_client(prefs), photo, settings.job_options(), results_root(prefs),
                           wait_for_backend=wait, backend_died=backend_died, landmarks_file=landmarks or None)

    def execute(self, context):
        # Synchronous: background mode and scripts (bpy.ops.uvidm.generate()).
        job = self._prepare(context)
        if isinstance(job, str):
            return self._fail(context, job)
        STATE.generate = self._job = job
        _set_status(context, "Generating", progress=0.0)
        return self._finish(context, job.run())

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        job = self._prepare(context)
        if isinstance(job, str):
            return self._fail(context, job)
        STATE.generate = self._job = job
        _set_status(context, "Connecting to the backend", progress=0.0)
        job.start()
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_STEP, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = self._job
        if STATE.generate is not job:  # cancelled from elsewhere, or the add-on was disabled and enabled
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
        if not hasattr(context.window_manager, "uvidm"):  # the add-on was disabled while this ran
            return {"CANCELLED"}
        job = getattr(self, "_job", None)
        if job is not None and job.health is not None:
            STATE.health, STATE.health_key = job.health, backend_key(get_preferences(context))
        if STATE.generate is job:
            STATE.generate = None
        _redraw_all()
        if event.state == "cancelled":
            _set_status(context, "Cancelled", progress=0.0)
            self.report({"WARNING"}, "Generate cancelled")
            return {"CANCELLED"}
        if event.state != "done":
            return self._fail(context, event.message)
        try:
            obj = import_result(context, event.result_dir)
            full = Path(event.result_dir) / FULL_HEAD_GLB
            if full.is_file() and obj.get("uvidm_file") != FULL_HEAD_GLB:  # "Both": the full head beside it
                import_result(context, full, name=f"{obj.name} full head")
                obj.select_set(True)
        except (ResultError, OSError, ValueError, RuntimeError) as error:
            return self._fail(context, f"The head was made ({event.result_dir}) but cannot be imported: {error}")
        context.window_manager.uvidm.last_result = str(event.result_dir)
        _set_status(context, f"Imported {obj.name} beside the scene, selected and framed ({event.result_dir})",
                    progress=1.0)
        self.report({"INFO"}, f"Imported {obj.name}")
        return {"FINISHED"}


class _InThread:
    """An operator whose work (network, subprocess; no bpy) runs in a thread while Blender stays responsive.

    `prepare(context)` returns the work's argument (or a message: refused), `work(argument)` runs off the
    main thread, `finish(context, result)` back on it. In background mode all three run in turn.
    """

    def prepare(self, context):
        raise NotImplementedError

    @staticmethod
    def work(argument):
        raise NotImplementedError

    def finish(self, context, result):
        raise NotImplementedError

    def execute(self, context):
        argument = self.prepare(context)
        if isinstance(argument, str):
            self.report({"ERROR"}, argument)
            return {"CANCELLED"}
        return self.finish(context, self.work(argument))

    def invoke(self, context, event):
        if bpy.app.background:
            return self.execute(context)
        argument = self.prepare(context)
        if isinstance(argument, str):
            self.report({"ERROR"}, argument)
            return {"CANCELLED"}
        self._result = None

        def target():
            self._result = self.work(argument)

        self._thread = threading.Thread(target=target, name=f"uvidm-{self.bl_idname}", daemon=True)
        self._thread.start()
        self._timer = context.window_manager.event_timer_add(TIMER_STEP, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type != "TIMER" or self._thread.is_alive():
            return {"PASS_THROUGH"}
        context.window_manager.event_timer_remove(self._timer)
        _redraw_all()
        return self.finish(context, self._result)


class UVIDM_OT_find_faces(_InThread, bpy.types.Operator):
    """Find the faces in the photo (or read them from the landmarks file) and number them on its thumbnail"""

    bl_idname = "uvidm.find_faces"
    bl_label = "Find Faces"

    def prepare(self, context):
        settings, prefs = context.scene.uvidm, get_preferences(context)
        photo, landmarks = settings.faces_key()
        if not photo or not os.path.isfile(photo):
            return "Choose a photo first (Photo, in the UV-IDM panel)."
        try:
            check_online(prefs)
            wait = start_local_backend(prefs)
        except BackendError as error:
            return error.message
        folder = user_folder() / "faces"
        name = hashlib.sha256(f"{photo}|{landmarks}|{os.path.getmtime(photo)}".encode()).hexdigest()[:16]
        return make_client(prefs), photo, landmarks or None, folder / f"{name}.png", wait

    @staticmethod
    def work(argument):
        client, photo, landmarks, overview, wait = argument
        try:
            if wait:  # a backend just started: give it the time to answer
                wait_for_backend(client, wait, backend_died)
            answer = client.faces(photo, landmarks)
            overview.parent.mkdir(parents=True, exist_ok=True)
            partial = overview.with_suffix(".partial")
            partial.write_bytes(base64.b64decode(answer["overview"]))
            os.replace(partial, overview)
        except (BackendError, OSError, ValueError, KeyError) as error:
            return getattr(error, "message", None) or f"The faces could not be read: {error}"
        largest = next((face["index"] for face in answer["faces"] if face.get("largest")), None)
        return FoundFaces(len(answer["faces"]), largest, overview, answer.get("source", "detector"))

    def finish(self, context, result):
        if not isinstance(result, FoundFaces):
            _set_status(context, result or "Finding the faces ended without an answer", error=True)
            self.report({"ERROR"}, result or "Finding the faces ended without an answer")
            return {"CANCELLED"}
        settings = context.scene.uvidm
        STATE.faces[settings.faces_key()] = result
        if settings.face_index >= result.count:
            settings.face_index = -1
        words = "No face found in the photo." if not result.count else (
            f"{result.count} face{'s' if result.count > 1 else ''} found: click a number to choose one.")
        _set_status(context, words, error=not result.count)
        self.report({"INFO"} if result.count else {"WARNING"}, words)
        return {"FINISHED"}


class UVIDM_OT_pick_face(bpy.types.Operator):
    """Make this face the one Generate reconstructs"""

    bl_idname = "uvidm.pick_face"
    bl_label = "Pick Face"
    bl_options = {"REGISTER", "UNDO"}

    index: bpy.props.IntProperty(name="Face", default=-1, min=-1, description="-1: the largest face")

    def execute(self, context):
        context.scene.uvidm.face_index = self.index
        return {"FINISHED"}


class UVIDM_OT_delete_result(bpy.types.Operator):
    """Delete this result folder from the disk (heads already in the scene stay)"""

    bl_idname = "uvidm.delete_result"
    bl_label = "Delete Result"

    path: StringProperty(name="Result", subtype="DIR_PATH", options={"SKIP_SAVE"})

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):
        folder = Path(bpy.path.abspath(self.path)).resolve()
        root = results_root(get_preferences(context)).resolve()
        if folder.parent != root or not is_result_folder(folder):
            self.report({"ERROR"}, f"{folder} is not a result folder in {root}; nothing deleted")
            return {"CANCELLED"}
        shutil.rmtree(folder)
        _set_status(context, f"Deleted the result {folder.name}")
        _redraw_all()
        return {"FINISHED"}


def _remember_health(key: tuple) -> Callable[[dict], None]:
    def remember(health: dict) -> None:
        STATE.health, STATE.health_key = health, key
    return remember


class UVIDM_OT_plan_models(_InThread, bpy.types.Operator):
    """Ask the backend which model files it would download, their sizes and licences (shown before anything
    is downloaded)"""

    bl_idname = "uvidm.plan_models"
    bl_label = "Download Model Files..."

    def prepare(self, context):
        prefs = get_preferences(context)
        try:
            check_online(prefs)
            wait = start_local_backend(prefs)
        except BackendError as error:
            return error.message
        return make_client(prefs), wait, backend_key(prefs), context.window_manager.uvidm.full_head

    @staticmethod
    def work(argument):
        client, wait, key, full_head = argument
        try:
            if wait:
                wait_for_backend(client, wait, backend_died)
            return key, client.models_plan(full_head=full_head)
        except BackendError as error:
            return error.message

    def finish(self, context, result):
        if not isinstance(result, tuple):
            message = result or "The backend did not say which files it would download"
            _set_status(context, message, error=True)
            self.report({"ERROR"}, message)
            return {"CANCELLED"}
        STATE.plan_key, STATE.model_plan = result
        context.window_manager.uvidm.accept_licences = False
        return {"FINISHED"}


class UVIDM_OT_download_models(bpy.types.Operator):
    """Download the model files listed above into the model folder (the backend downloads and loads them)"""

    bl_idname = "uvidm.download_models"
    bl_label = "Download"

    @classmethod
    def poll(cls, context):
        running = STATE.model_download is not None and not STATE.model_download.done
        return STATE.model_plan is not None and context.window_manager.uvidm.accept_licences and not running

    def execute(self, context):
        prefs = get_preferences(context)
        if STATE.plan_key != backend_key(prefs):
            self.report({"ERROR"}, "The list was made for another backend: click Download Model Files again")
            return {"CANCELLED"}
        download = ModelDownload(make_client(prefs), on_health=_remember_health(backend_key(prefs)),
                                 full_head=context.window_manager.uvidm.full_head)
        STATE.model_download = download
        if bpy.app.background:
            ok = download.run()
            if ok:
                STATE.model_plan = None
            self.report({"INFO"} if ok else {"ERROR"}, download.message if ok else download.error)
            return {"FINISHED"} if ok else {"CANCELLED"}
        download.start()
        bpy.app.timers.register(_watch_download, first_interval=0.5)
        return {"FINISHED"}


def _watch_download():
    _redraw_all()
    download = STATE.model_download
    if download is not None and not download.done:
        return 0.5
    if download is not None and not download.error:
        STATE.model_plan = None  # done: the list is no longer what the user will get
    return None


class UVIDM_OT_cancel_model_download(bpy.types.Operator):
    """Stop the download (finished files are kept; the rest resumes next time)"""

    bl_idname = "uvidm.cancel_model_download"
    bl_label = "Cancel Download"

    def execute(self, context):
        if STATE.model_download is not None:
            STATE.model_download.cancel()
        return {"FINISHED"}


class UVIDM_OT_cancel_generate(bpy.types.Operator):
    """Stop the running Generate (the backend drops the job)"""

    bl_idname = "uvidm.cancel_generate"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return STATE.generate is not None

    def execute(self, context):
        job, STATE.generate = STATE.generate, None
        if job is not None:
            job.cancel()  # its thread sends the DELETE; the modal Generate ends on its next timer tick
        _set_status(context, "Cancelled", progress=0.0)
        _redraw_all()
        return {"FINISHED"}


def _import(operator, context, path: str):
    try:
        obj = import_result(context, bpy.path.abspath(path))
    except (ResultError, OSError, ValueError, RuntimeError) as error:
        operator.report({"ERROR"}, f"Cannot import {path}: {error}")
        return {"CANCELLED"}
    context.window_manager.uvidm.last_result = str(obj.get("uvidm_result", ""))
    _set_status(context, f"Imported {obj.name} beside the scene, selected and framed", progress=0.0)
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
        _set_status(context, f"Exported {path.name} for {self.preset.title()} to {path.parent}")
        self.report({"INFO"}, f"Exported {path}")
        return {"FINISHED"}


class UVIDM_OT_check_backend(_InThread, bpy.types.Operator):
    """Ask the backend how it is (and check the local Python environment), in plain words"""

    bl_idname = "uvidm.check_backend"
    bl_label = "Check Backend"

    @staticmethod
    def work(snap) -> tuple[str, str]:
        """({'INFO'|'WARNING'|'ERROR'}, words); network and subprocess only, no bpy: runs in a thread."""
        health = None
        try:
            check_online(snap, snap.online_access)
            client = Client(snap.url, token=snap.token if snap.backend_mode == "REMOTE" else None)
            health = client.health(timeout=5.0)
            if health.get("token_required"):  # health answers everyone: ask where the token counts
                client.check_access()
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
        STATE.backend_key = snap.key
        STATE.health, STATE.health_key = health, snap.key
        return level, message

    def prepare(self, context):
        return snapshot(context)

    def finish(self, context, result):
        level, message = result or ("ERROR", "The check ended without an answer; see the system console")
        self.report({level}, message)
        return {"FINISHED"} if level != "ERROR" else {"CANCELLED"}


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
        if problem := venv_problem(blender_python()):
            self.report({"ERROR"}, problem)
            return {"CANCELLED"}
        STATE.backend.stop()  # it may run from the environment being replaced
        venv = venv_dir()
        (venv / READY_MARK).unlink(missing_ok=True)
        try:
            source = stage_backend_source(EXTENSION_ROOT, user_folder() / "backend-source")
        except OSError as error:
            self.report({"ERROR"}, f"Cannot prepare the backend's files: {error}")
            return {"CANCELLED"}
        build = torch_build(prefs)
        steps = setup_steps(blender_python(), venv, source, torch_spec=prefs.torch_spec.strip() or "torch",
                            build=build)
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
        self.report({"INFO"}, f"Setting up the backend's environment with torch {build.label} (progress in the "
                              "add-on preferences)")
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
        elif STATE.backend.port != prefs.port:
            self.report({"INFO"}, f"The backend started earlier runs on port {STATE.backend.port}; stop it to "
                                  f"start one on port {prefs.port}")
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
    UVIDM_OT_generate, UVIDM_OT_cancel_generate, UVIDM_OT_find_faces, UVIDM_OT_pick_face, UVIDM_OT_import_result,
    UVIDM_OT_import_recent, UVIDM_OT_delete_result, UVIDM_OT_export_game, UVIDM_OT_check_backend,
    UVIDM_OT_setup_environment, UVIDM_OT_cancel_setup, UVIDM_OT_start_backend, UVIDM_OT_stop_backend,
    UVIDM_OT_plan_models, UVIDM_OT_download_models, UVIDM_OT_cancel_model_download,
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
