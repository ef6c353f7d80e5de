"""The sidebar panel (3D Viewport > Sidebar > UV-IDM): photo, options, Generate with progress,
recent results with Import buttons, export for game engines."""

import os
import textwrap

import bpy

from . import previews
from .preferences import get_preferences, results_root
from .results import ResultError, ResultFolder, recent_results
from .runtime import STATE

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


def _wrapped(layout, text: str, context, icon: str = "NONE") -> None:
    width = max(20, int((context.region.width if context.region else 300) / (7 * context.preferences.view.ui_scale)))
    for index, line in enumerate(textwrap.wrap(text, width) or [""]):
        layout.label(text=line, icon=icon if index == 0 else "BLANK1")


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
        layout.prop(settings, "photo", text="")
        if settings.photo and (icon := previews.icon_id(settings.photo)):
            layout.template_icon(icon_value=icon, scale=8)
        col = layout.column(align=True)
        col.use_property_split = True
        col.use_property_decorate = False
        col.prop(settings, "face_index")
        col.prop(settings, "sampler")
        col.prop(settings, "steps")
        col.prop(settings, "seed")
        col.prop(settings, "texture_size")
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
            if status.message:
                _wrapped(layout.box(), status.message, context, icon="ERROR" if status.is_error else "INFO")


class VIEW3D_PT_uvidm_advanced(_Sidebar, bpy.types.Panel):
    bl_label = "Advanced"
    bl_parent_id = "VIEW3D_PT_uvidm"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.prop(context.scene.uvidm, "landmarks")
        prefs = get_preferences(context)
        mode = {"LOCAL": "local", "CUSTOM_PYTHON": "local (own Python)", "REMOTE": "remote"}[prefs.backend_mode]
        layout.label(text=f"Backend: {mode}", icon="NETWORK_DRIVE")
        row = layout.row(align=True)
        row.operator("uvidm.check_backend", icon="QUESTION")
        if prefs.backend_mode != "REMOTE":
            if STATE.backend.running:
                row.operator("uvidm.stop_backend", text="Stop", icon="CANCEL")
            else:
                row.operator("uvidm.start_backend", text="Start", icon="PLAY")
        if STATE.backend_text:
            _wrapped(layout, STATE.backend_text, context, icon="CHECKMARK" if STATE.backend_ok else "ERROR")


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
            row = layout.row(align=True)
            try:
                result = ResultFolder.from_path(folder)
                icon = previews.icon_id(str(result.preview)) if result.preview else 0
                label = result.name if result.name == folder.name else f"{result.name} ({folder.name})"
            except ResultError:
                icon, label = 0, folder.name
            if icon:
                row.label(text=label, icon_value=icon)
            else:
                row.label(text=label, icon="USER")
            row.operator("uvidm.import_recent", text="Import", icon="IMPORT").path = str(folder)
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
