"""The sidebar panel (3D Viewport > Sidebar > UV-IDM): photo and its faces, options, Generate with
progress, the last head's preview, recent results (Import, Delete), export for game engines."""

import os
import time

import bpy

from . import ADDON_ID, previews
from .preferences import backend_key, environment_ready, get_preferences, last_health, results_root
from .results import ResultError, ResultFolder, recent_results
from .runtime import STATE
from .text import wrapped_label

_recent_cache: dict[str, tuple[float, list]] = {}


def _recent(root) -> list:
    """Recent result folders, re-listed only when the folder changes (draw runs often)."""
    key = str(root)
    try:
        stamp = os.stat(root).st_mtime
    except OSError:
        return []
    cached = _recent_cache.get(key)
    if cached is None or cached[0] != stamp:
        cached = (stamp, recent_results(root, limit=8))
        _recent_cache[key] = cached
    return cached[1]


def setup_missing(prefs) -> str | None:
    """What the user must still set up before a Generate can work, in words (None: nothing known missing).

    A backend that answered (a local one started by hand on the port, a remote one) needs no environment
    here: then only its model files count."""
    health = last_health(prefs)
    if health is None and prefs.backend_mode == "LOCAL" and not environment_ready():
        return "Set-up: the backend's Python environment is not installed yet."
    if health is None and prefs.backend_mode == "CUSTOM_PYTHON" and not (prefs.python_path and os.path.isfile(
            bpy.path.abspath(prefs.python_path))):
        return "Set-up: choose the Python that runs the backend."
    models = (health or {}).get("models") or {}
    state = models.get("state")
    if state == "missing":
        names = models.get("missing") or []
        listed = f" ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" if names else ""
        return f"Set-up: the model files are missing{listed}: download them in the preferences."
    if state == "failed":
        return "Set-up: the model files could not be loaded (Check Backend says why)."
    if state == "downloading":
        return "Set-up: the model files are being downloaded."
    return None


def _face_choice(layout, context, settings) -> None:
    found = STATE.faces.get(settings.faces_key())
    if found is None:
        row = layout.row(align=True)
        chosen = "the largest" if settings.face_index < 0 else f"number {settings.face_index + 1}"
        row.label(text=f"Face: {chosen}", icon="USER")
        row.operator("uvidm.find_faces", text="Find Faces", icon="VIEWZOOM")
        return
    if found.count == 0:
        wrapped_label(layout, context, "No face found in this photo: try another photo, or a landmarks file "
                                       "(Advanced).", icon="ERROR")
        return
    layout.label(text="Face (numbered on the photo):")
    grid = layout.grid_flow(row_major=True, columns=6, even_columns=True, align=True)
    grid.operator("uvidm.pick_face", text="Largest", depress=settings.face_index < 0).index = -1
    for index in range(found.count):
        grid.operator("uvidm.pick_face", text=str(index + 1), depress=settings.face_index == index).index = index


class _Sidebar:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "UV-IDM"


class VIEW3D_PT_uvidm(_Sidebar, bpy.types.Panel):
    bl_label = "UV-IDM Head"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.uvidm
        status = context.window_manager.uvidm
        prefs = get_preferences(context)
        if missing := setup_missing(prefs):
            box = layout.box()
            wrapped_label(box, context, missing, icon="ERROR")
            box.operator("preferences.addon_show", text="Open Set-up", icon="PREFERENCES").module = ADDON_ID
        layout.prop(settings, "photo", text="Photo")
        if settings.photo:
            found = STATE.faces.get(settings.faces_key())
            shown = str(found.overview) if found is not None else settings.photo
            if icon := previews.icon_id(shown):
                layout.template_icon(icon_value=icon, scale=8)
            _face_choice(layout, context, settings)
        col = layout.column(align=True)
        col.use_property_split = True
        col.use_property_decorate = False
        col.prop(settings, "sampler")
        col.prop(settings, "steps")
        col.prop(settings, "seed")
        col.prop(settings, "texture_size")
        col.prop(settings, "texture_look")
        col.prop(settings, "head_kind")
        col.prop(settings, "expression")
        col.prop(settings, "delight")
        if status.running:
            row = layout.row(align=True)
            row.progress(factor=status.progress, type="BAR", text=status.message or "Working")
            row.operator("uvidm.cancel_generate", text="", icon="CANCEL")
            layout.label(text="Esc cancels", icon="INFO")
        else:
            row = layout.row()
            row.scale_y = 1.5
            row.enabled = bool(settings.photo)
            row.operator("uvidm.generate", icon="USER")
            if not settings.photo:
                layout.label(text="Choose a photo to generate a head", icon="INFO")
            if status.message:
                wrapped_label(layout.box(), context, status.message, icon="ERROR" if status.is_error else "INFO")
        health = last_health(prefs)
        if health is not None and health.get("device"):  # from the last Generate or Check Backend
            layout.label(text=f"Runs on: {health['device']}", icon="MEMORY")
            if health.get("device_warning"):
                wrapped_label(layout, context, f"A GPU is not used: {health['device_warning']}", icon="ERROR")
        if not status.running and status.last_result:
            preview = os.path.join(status.last_result, "preview.png")
            if os.path.isfile(preview) and (icon := previews.icon_id(preview)):
                layout.label(text=f"Last head: {os.path.basename(status.last_result)}")
                layout.template_icon(icon_value=icon, scale=6)


class VIEW3D_PT_uvidm_advanced(_Sidebar, bpy.types.Panel):
    bl_label = "Advanced"
    bl_parent_id = "VIEW3D_PT_uvidm"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.prop(context.scene.uvidm, "landmarks_file")
        prefs = get_preferences(context)
        mode = {"LOCAL": "local", "CUSTOM_PYTHON": "local (own Python)", "REMOTE": "remote"}[prefs.backend_mode]
        layout.label(text=f"Backend: {mode}", icon="NETWORK_DRIVE")
        row = layout.row(align=True)
        row.operator("uvidm.check_backend", icon="QUESTION")
        if STATE.backend.running:
            row.operator("uvidm.stop_backend", text=f"Stop (port {STATE.backend.port})", icon="CANCEL")
        elif prefs.backend_mode != "REMOTE":
            row.operator("uvidm.start_backend", text="Start", icon="PLAY")
        if STATE.backend_text and STATE.backend_key == backend_key(prefs):
            wrapped_label(layout, context, STATE.backend_text, icon="CHECKMARK" if STATE.backend_ok else "ERROR")


class VIEW3D_PT_uvidm_results(_Sidebar, bpy.types.Panel):
    bl_label = "Results"
    bl_parent_id = "VIEW3D_PT_uvidm"

    def draw(self, context):
        layout = self.layout
        root = results_root(get_preferences(context))
        folders = _recent(root)
        if not folders:
            layout.label(text="No results yet")
        for folder in folders:
            box = layout.box()
            row = box.row(align=True)
            try:
                result = ResultFolder.from_path(folder)
                icon = previews.icon_id(str(result.preview)) if result.preview else 0
                title, when = result.title, time.strftime("%Y-%m-%d %H:%M", time.localtime(result.created))
            except (ResultError, OSError):
                icon, title, when = 0, folder.name, ""
            if icon:
                row.label(text=title, icon_value=icon)
            else:
                row.label(text=title, icon="USER")
            row.operator("uvidm.import_recent", text="", icon="IMPORT").path = str(folder)
            row.operator("uvidm.delete_result", text="", icon="TRASH").path = str(folder)
            if when:
                box.label(text=f"{when} · {folder.name}")
        row = layout.row(align=True)
        row.operator("uvidm.import_result", text="Import File...", icon="FILEBROWSER")
        if root.is_dir():
            row.operator("wm.path_open", text="", icon="FILE_FOLDER").filepath = str(root)


class VIEW3D_PT_uvidm_export(_Sidebar, bpy.types.Panel):
    bl_label = "Export for Game Engines"
    bl_parent_id = "VIEW3D_PT_uvidm"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        col = self.layout.column(align=True)
        col.operator("uvidm.export_game", text="Unity (FBX)").preset = "UNITY"
        col.operator("uvidm.export_game", text="Unreal (FBX)").preset = "UNREAL"
        col.operator("uvidm.export_game", text="glTF Binary (.glb)").preset = "GLTF"


CLASSES = (VIEW3D_PT_uvidm, VIEW3D_PT_uvidm_advanced, VIEW3D_PT_uvidm_results, VIEW3D_PT_uvidm_export)


def register() -> None:
    for cls in CLASSES:
        if not getattr(cls, "is_registered", False):
            bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(CLASSES):
        if getattr(cls, "is_registered", False):
            bpy.utils.unregister_class(cls)
    _recent_cache.clear()
