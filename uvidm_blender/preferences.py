"""Add-on preferences: where the backend runs (local, local with your own Python, remote), the model
folder, the device; plus the helpers that turn them into a client or a started backend."""

# No `from __future__ import annotations` here: Blender reads the property annotations.

import atexit
import os
from pathlib import Path
from types import SimpleNamespace

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from . import ADDON_ID
from .backend import (
    DEFAULT_PORT,
    TORCH_BUILDS,
    TORCH_PIN,
    check_python,
    choose_torch_build,
    model_subfolders,
    port_in_use,
    serve_command,
    venv_python,
)
from .client import BackendError, Client, is_loopback, normalize_url, size_text
from .runtime import STATE
from .text import wrapped_label

READY_MARK = ".uvidm-ready"  # written into the environment after a complete setup
BACKEND_START_WAIT = 300.0  # seconds a Generate waits for a backend it just started (first start loads models)

MODES = [
    ("LOCAL", "Local", "Run the backend on this computer in a Python environment the add-on sets up", 0),
    ("CUSTOM_PYTHON", "Local, Own Python", "Run the backend on this computer with a Python that already has it", 1),
    ("REMOTE", "Remote", "Use a backend that runs elsewhere (URL and token)", 2),
]
DEVICES = [
    ("AUTO", "Automatic", "The GPU when there is one, else the CPU"),
    ("cuda", "NVIDIA GPU (CUDA)", "Needs a CUDA build of torch"),
    ("mps", "Apple GPU (Metal)", "macOS on Apple silicon"),
    ("cpu", "CPU", "Works everywhere; minutes per head"),
]


def _mode_changed(prefs, _context) -> None:
    # A local backend holds about 1 GB of memory: it stops when the add-on no longer uses it.
    if prefs.backend_mode == "REMOTE":
        STATE.backend.stop()


class UVIDM_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    backend_mode: EnumProperty(name="Backend", items=MODES, default="LOCAL", update=_mode_changed)
    python_path: StringProperty(
        name="Python", subtype="FILE_PATH",
        description="A python executable with the UV-IDM backend installed (pip install <this extension's folder>)")
    port: IntProperty(name="Port", default=DEFAULT_PORT, min=1024, max=65535,
                      description="Port of the local backend (on 127.0.0.1)")
    remote_url: StringProperty(name="URL", default="http://127.0.0.1:8765",
                               description="Address of a running `uvidm serve`")
    token: StringProperty(name="Token", subtype="PASSWORD",
                          description="The backend's access token (needed when it listens on the network)")
    model_folder: StringProperty(
        name="Model Folder", subtype="DIR_PATH",
        description="Folder with weights/ and BFM/; empty: 'models' in the extension's user folder, where "
                    "Download Model Files puts them")
    device: EnumProperty(name="Device", items=DEVICES, default="AUTO")
    results_folder: StringProperty(
        name="Results Folder", subtype="DIR_PATH",
        description="Where generated heads are saved; empty: the extension's user folder")
    torch_spec: StringProperty(name="Torch", default=TORCH_PIN,
                               description="The torch requirement the environment installs")
    torch_build: EnumProperty(name="Torch Build", items=TORCH_BUILDS, default="AUTO",
                              description="Which build of torch Set Up Environment installs")
    index_url: StringProperty(name="Custom Index URL",
                              description="The package index torch comes from when Torch Build is Custom Index")

    def draw(self, context):
        draw_preferences(self, context, self.layout)


class _Defaults:
    """The preferences' defaults, for when the add-on was registered without being enabled."""

    backend_mode = "LOCAL"
    python_path = ""
    port = DEFAULT_PORT
    remote_url = "http://127.0.0.1:8765"
    token = ""
    model_folder = ""
    device = "AUTO"
    results_folder = ""
    torch_spec = TORCH_PIN
    torch_build = "AUTO"
    index_url = ""


def get_preferences(context=None):
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None and addon.preferences is not None else _Defaults()


def user_folder() -> Path:
    """The extension's user folder (kept across updates of the extension)."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON_ID, create=True))
    except ValueError:  # not loaded as an extension (a legacy add-on install)
        return Path(bpy.utils.user_resource("DATAFILES", path="uvidm", create=True))


def model_root(prefs) -> Path:
    """The model folder (weights/ and BFM/): the chosen one, or 'models' in the extension's user folder."""
    return Path(bpy.path.abspath(prefs.model_folder)) if prefs.model_folder else user_folder() / "models"


def results_root(prefs) -> Path:
    return Path(bpy.path.abspath(prefs.results_folder)) if prefs.results_folder else user_folder() / "results"


def venv_dir() -> Path:
    return user_folder() / "venv"


def environment_ready() -> bool:
    return (venv_dir() / READY_MARK).is_file() and venv_python(venv_dir()).is_file()


def backend_python(prefs) -> str:
    if prefs.backend_mode == "CUSTOM_PYTHON":
        return bpy.path.abspath(prefs.python_path)
    return str(venv_python(venv_dir()))


def backend_url(prefs) -> str:
    if prefs.backend_mode == "REMOTE":
        return normalize_url(prefs.remote_url)
    return f"http://127.0.0.1:{prefs.port}"


def make_client(prefs) -> Client:
    return Client(backend_url(prefs), token=prefs.token if prefs.backend_mode == "REMOTE" else None)


def check_online(prefs, online_access: bool | None = None) -> None:
    """Blender's 'Allow Online Access' governs the network beyond this computer (not 127.0.0.1)."""
    online = bpy.app.online_access if online_access is None else online_access
    if prefs.backend_mode == "REMOTE" and not online and not is_loopback(prefs.remote_url):
        raise BackendError("Online access is off in Blender (Preferences > System > Network). Allow it to use a "
                           "remote backend, or switch the backend to Local.")


def backend_log() -> Path:
    return user_folder() / "backend.log"


def start_local_backend(prefs) -> float:
    """Start `uvidm serve` unless it runs (ours or one already on the port); returns how long to wait for it."""
    if prefs.backend_mode == "REMOTE":
        return 0.0
    if STATE.backend.running and STATE.backend.port not in (None, prefs.port):
        STATE.backend.stop()  # the port was changed: the backend moves there
    if STATE.backend.running:
        return BACKEND_START_WAIT
    if port_in_use(prefs.port):
        return 0.0  # someone already serves there (e.g. `uvidm serve` started by hand): use it
    python = backend_python(prefs)
    if prefs.backend_mode == "LOCAL" and not environment_ready():
        raise BackendError("The backend's Python environment is not set up yet: open Preferences > Add-ons > "
                           "UV-IDM and click Set Up Environment.")
    if not python or not os.path.isfile(python):
        raise BackendError(f"The Python for the backend ({python or 'not set'}) does not exist: fix it in the "
                           "add-on preferences.")
    weights, bfm = model_subfolders(model_root(prefs))
    argv = serve_command(python, port=prefs.port, weights=weights, bfm=bfm,
                         device="" if prefs.device == "AUTO" else prefs.device,
                         jobs_dir=str(user_folder() / "backend-jobs"))
    env = dict(os.environ)
    for name in ("PYTHONHOME", "PYTHONPATH"):  # Blender's own Python settings must not leak into the venv
        env.pop(name, None)
    STATE.backend.start(argv, backend_log(), env=env, port=prefs.port)
    return BACKEND_START_WAIT


def torch_build(prefs):
    """The torch build Set Up Environment installs here, and why (the NVIDIA driver is asked once)."""
    import platform

    return choose_torch_build(prefs.torch_build, platform.system(), STATE.driver_cuda, prefs.index_url)


def backend_key(prefs) -> tuple:
    """What a Check Backend answer is about: it is shown only while the same backend is chosen."""
    return (prefs.backend_mode, backend_url(prefs))


def snapshot(context=None) -> SimpleNamespace:
    """The preferences as plain values (and what follows from them), for use off the main thread."""
    prefs = get_preferences(context)
    values = {name: getattr(prefs, name) for name in vars(_Defaults) if not name.startswith("_")}
    return SimpleNamespace(**values, url=backend_url(prefs), python=backend_python(prefs), key=backend_key(prefs),
                           environment_ready=environment_ready(), online_access=bpy.app.online_access)


def backend_died() -> str | None:
    """Why the backend the add-on started is gone (None: it runs, or it is not ours)."""
    process = STATE.backend
    code = process.exit_code
    if process.process is None or code is None:
        return None
    tail = " | ".join(line for line in process.log_tail(4) if line.strip() and not line.startswith("$ "))
    return (f"The local backend stopped (exit code {code}): {tail or 'no output'}. "
            f"Full log: {process.log_file}")


def describe_local_environment(snap: SimpleNamespace) -> tuple[bool, str]:
    """(ok, words) about the backend's Python; runs a subprocess: call it from a thread."""
    if snap.backend_mode == "LOCAL" and not snap.environment_ready:
        return False, "Python environment: not set up (click Set Up Environment in the add-on preferences)"
    if not snap.python or not os.path.isfile(snap.python):
        return False, f"Python: {snap.python or 'not set'} does not exist"
    ok, words = check_python(snap.python)
    return ok, f"Python environment: {words}"


def draw_preferences(prefs, context, layout) -> None:
    layout.row().prop(prefs, "backend_mode", expand=True)
    if prefs.backend_mode == "LOCAL":
        _draw_environment(prefs, context, _step(layout, 1, "Python Environment", environment_ready()))
    elif prefs.backend_mode == "CUSTOM_PYTHON":
        box = _step(layout, 1, "Python", bool(prefs.python_path) and os.path.isfile(backend_python(prefs)))
        box.prop(prefs, "python_path")
    if prefs.backend_mode != "REMOTE":
        box = _step(layout, 2, "Model Files", models_ready(prefs))
        box.prop(prefs, "model_folder")
        box.label(text=f"In use: {model_root(prefs)}", icon="FILE_FOLDER")
        _draw_model_files(prefs, context, box)
        _draw_local_backend(prefs, context, _step(layout, 3, "Backend", STATE.backend.running or None))
    else:
        box = _step(layout, 1, "Remote Backend", STATE.backend_ok if STATE.backend_key == backend_key(prefs) else None)
        box.prop(prefs, "remote_url")
        box.prop(prefs, "token")
        if not bpy.app.online_access and not is_loopback(prefs.remote_url):
            box.label(text="Online access is off (Preferences > System > Network)", icon="ERROR")
        if STATE.backend.running:  # ours, from before the switch: it can still be stopped here
            row = box.row()
            row.label(text=f"The local backend still runs (port {STATE.backend.port})", icon="INFO")
            row.operator("uvidm.stop_backend", text="Stop", icon="CANCEL")
        _draw_model_files(prefs, context, _step(layout, 2, "Model Files (on the remote backend)", models_ready(prefs)))
    layout.prop(prefs, "results_folder")
    row = layout.row()
    row.operator("uvidm.check_backend", icon="QUESTION")
    if STATE.backend_text and STATE.backend_key == backend_key(prefs):
        wrapped_label(layout, context, STATE.backend_text, icon="CHECKMARK" if STATE.backend_ok else "ERROR")


def last_health(prefs) -> dict | None:
    """The chosen backend's last health answer (None when it has not answered since it was chosen)."""
    return STATE.health if STATE.health_key == backend_key(prefs) else None


def models_ready(prefs) -> bool | None:
    """Are the backend's model files there and loaded? None: not known (the backend has not answered)."""
    state = ((last_health(prefs) or {}).get("models") or {}).get("state")
    return {"ready": True, "missing": False, "failed": False}.get(state)


def _draw_model_files(prefs, context, box) -> None:
    models = (last_health(prefs) or {}).get("models") or {}
    download = STATE.model_download
    if download is not None and not download.done:
        box.progress(factor=download.progress, type="BAR", text=download.message)
        box.operator("uvidm.cancel_model_download", text="Cancel Download", icon="CANCEL")
        return
    if download is not None and download.error:
        wrapped_label(box, context, download.error, icon="ERROR")
    if models.get("state") == "ready":
        box.label(text="Ready: the backend has loaded them", icon="CHECKMARK")
    elif models.get("state") == "missing":
        names = models.get("missing") or []
        wrapped_label(box, context, f"Missing: {', '.join(names) or 'model files'}", icon="ERROR")
    elif models.get("state") == "failed":
        wrapped_label(box, context, f"They do not load: {models.get('error') or 'no details'}", icon="ERROR")
    elif not models:
        box.label(text="Not checked yet: Check Backend, or Download Model Files (starts the backend)", icon="INFO")
    plan = STATE.model_plan if STATE.plan_key == backend_key(prefs) else None
    if plan is None:
        box.operator("uvidm.plan_models", icon="IMPORT")
        return
    files = plan.get("files") or []
    col = box.column(align=True)
    col.label(text=f"{len(files)} file{'s' if len(files) != 1 else ''} from {plan.get('repository')} "
                   f"({plan.get('revision')}), {size_text(plan.get('total_bytes') or 0)} in all:")
    for item in files:
        size = item.get("size")
        col.label(text=f"{item.get('name')}: {size_text(size) if size is not None else 'size not known yet'}",
                  icon="DOT")
    licences = box.box()
    for paragraph in (plan.get("licences") or "").splitlines():
        wrapped_label(licences, context, paragraph)
    box.prop(context.window_manager.uvidm, "full_head")
    box.prop(context.window_manager.uvidm, "accept_licences")
    row = box.row()
    row.scale_y = 1.3
    row.operator("uvidm.download_models", icon="IMPORT")


def _step(layout, number: int, title: str, done: bool | None):
    """A box headed 'number. title' with its state (done, to do, or unknown: None)."""
    box = layout.box()
    icon = {True: "CHECKMARK", False: "ERROR", None: "DOT"}[done]
    box.label(text=f"{number}. {title}", icon=icon)
    return box


def _draw_local_backend(prefs, context, box) -> None:
    col = box.column()
    col.prop(prefs, "port")
    col.prop(prefs, "device")
    row = box.row()
    if STATE.backend.running:
        row.label(text=f"Running on port {STATE.backend.port} (process {STATE.backend.process.pid})",
                  icon="CHECKMARK")
        row.operator("uvidm.stop_backend", text="Stop", icon="CANCEL")
    else:
        code = STATE.backend.exit_code
        row.label(text="Not running" + (f" (it exited with code {code})" if code else ""))
        row.operator("uvidm.start_backend", text="Start", icon="PLAY")
    if STATE.backend.log_file is not None:
        box.operator("wm.path_open", text="Open Backend Log", icon="TEXT").filepath = str(STATE.backend.log_file)


def _draw_environment(prefs, context, box) -> None:
    setup = STATE.setup
    if setup is not None and setup.running:
        box.progress(factor=setup.progress, type="BAR", text=setup.message)
        if setup.tail:
            wrapped_label(box, context, setup.tail[-1])
        box.operator("uvidm.cancel_setup", text="Cancel Setup", icon="CANCEL")
        return
    if setup is not None and setup.error:
        wrapped_label(box, context, f"Setup failed: {setup.error}", icon="ERROR")
        for line in list(setup.tail)[-8:]:  # the log's end, where pip says why
            if line.strip():
                box.label(text=line)
        if setup.log_file is not None:
            box.operator("wm.path_open", text="Open Setup Log", icon="TEXT").filepath = str(setup.log_file)
    ready = environment_ready()
    box.label(text=f"{'Ready' if ready else 'Not set up'}: {venv_dir()}", icon="NONE")
    build = torch_build(prefs)
    wrapped_label(box, context, f"Torch: {build.label}, because {build.reason}.", icon="INFO")
    col = box.column()
    col.prop(prefs, "torch_build")
    if prefs.torch_build == "CUSTOM":
        col.prop(prefs, "index_url")
    col.prop(prefs, "torch_spec")
    box.operator("uvidm.setup_environment", text="Reinstall Environment" if ready else "Set Up Environment",
                 icon="IMPORT")


CLASSES = (UVIDM_AP_preferences,)


def register() -> None:
    for cls in CLASSES:
        if not getattr(cls, "is_registered", False):
            bpy.utils.register_class(cls)
    # Blender does not unregister add-ons when it quits: stop the backend we started then too.
    atexit.unregister(STATE.shutdown)
    atexit.register(STATE.shutdown)


def unregister() -> None:
    atexit.unregister(STATE.shutdown)
    STATE.shutdown()
    for cls in reversed(CLASSES):
        if getattr(cls, "is_registered", False):
            bpy.utils.unregister_class(cls)
