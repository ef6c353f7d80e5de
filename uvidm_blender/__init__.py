"""UV-IDM for Blender, the add-on: a sidebar panel that turns a photo into a textured head.

`register()` delegates to each submodule in order and `unregister()` in reverse (both may run
twice). The modules that talk to the backend (client, jobs, backend, results) do not import bpy,
so they can be used and tested without Blender; bpy is imported only by the UI modules, loaded
by `register()`.
"""

import importlib

# The extension's own package ("bl_ext.<repository>.uvidm" when Blender loads it); the add-on's
# preferences are registered under this name.
ADDON_ID = __name__.rpartition(".")[0] or __name__

_MODULES = ("previews", "properties", "preferences", "importer", "operators", "panel")


def _submodules() -> list:
    return [importlib.import_module(f"{__name__}.{name}") for name in _MODULES]


def register() -> None:
    for module in _submodules():
        module.register()


def unregister() -> None:
    for module in reversed(_submodules()):
        module.unregister()
