"""UV-IDM for Blender: the extension's entry point (blender_manifest.toml sits beside it).

Blender imports this folder as the package `bl_ext.<repository>.uvidm`; the add-on itself is
`uvidm_blender/`, the backend it can install and run is `uvidm_backend/`. Nothing is imported
at module level, so tools that merely import this file (pytest, linters) need no Blender.
"""


def register() -> None:
    from .uvidm_blender import register as register_addon

    register_addon()


def unregister() -> None:
    from .uvidm_blender import unregister as unregister_addon

    unregister_addon()
