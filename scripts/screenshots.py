"""Screenshots of the add-on's panel and preferences in a real Blender window, for reviewers.

Run by scripts/screenshots.sh under Xvfb (not part of CI):
    blender --factory-startup --python scripts/screenshots.py -- OUT_DIR [PHOTO]
Enables the add-on from this checkout (a development extension repository linking to it), opens the
UV-IDM tab of the sidebar with a photo chosen, and saves sidebar.png (the panel at the default
sidebar width, with a long error message) and preferences.png (the add-on's preferences), then quits.
"""

import sys
import tempfile
from pathlib import Path

import addon_utils
import bpy

ROOT = Path(__file__).resolve().parents[1]
MODULE = "bl_ext.uvidm_shots.uvidm"
args = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
OUT = Path(args[0] if args else "screenshots").resolve()
PHOTO = args[1] if len(args) > 1 else ""


def enable_addon() -> None:
    repo_dir = Path(tempfile.mkdtemp(prefix="uvidm-shots-repo-"))
    (repo_dir / "uvidm").symlink_to(ROOT, target_is_directory=True)
    bpy.context.preferences.extensions.repos.new(name="uvidm-shots", module="uvidm_shots",
                                                 custom_directory=str(repo_dir), source="USER")
    if addon_utils.enable(MODULE, default_set=True) is None:
        raise SystemExit("the add-on did not enable")


def view3d():
    for area in bpy.context.window.screen.areas:
        if area.type == "VIEW_3D":
            return area
    raise SystemExit("no 3D viewport in the start-up file")


def open_sidebar() -> None:
    area = view3d()
    space = area.spaces.active
    space.show_region_ui = True
    for region in area.regions:
        if region.type == "UI":
            region.active_panel_category = "UV-IDM"
    if PHOTO:
        bpy.context.scene.uvidm.photo = PHOTO
    bpy.context.window_manager.uvidm.message = ("No UV-IDM backend answers at http://127.0.0.1:8765 (connection "
                                                "refused). Start it in the add-on preferences (Backend: Start) or "
                                                "fix the URL.")
    bpy.context.window_manager.uvidm.is_error = True


def shot(name: str, area=None) -> None:
    path = OUT / name
    if area is None:
        bpy.ops.screen.screenshot(filepath=str(path))
    else:
        with bpy.context.temp_override(area=area):
            bpy.ops.screen.screenshot_area(filepath=str(path))
    print(f"wrote {path}")


STEPS = []


def step(function):
    STEPS.append(function)
    return function


@step
def sidebar():
    shot("sidebar.png", view3d())


@step
def preferences():
    bpy.ops.preferences.addon_show(module=MODULE)


@step
def preferences_shot():
    shot("preferences.png")


@step
def quit_blender():
    bpy.ops.wm.quit_blender()


def run_next():
    """One step per timer tick: the window redraws between steps, so each screenshot shows the last change."""
    if not STEPS:
        return None
    function = STEPS.pop(0)
    try:
        function()
    except Exception as error:  # a failed step must not leave Blender open under Xvfb
        print(f"step {function.__name__} failed: {error}")
    return 1.5


OUT.mkdir(parents=True, exist_ok=True)
enable_addon()
open_sidebar()
bpy.app.timers.register(run_next, first_interval=3.0)
