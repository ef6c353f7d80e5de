"""The local backend: a Python environment for it, and the `uvidm serve` process (standard library only).

The add-on can set up its own environment in the extension's user folder: `python -m venv`,
then pip installs the pinned torch and the backend bundled in the extension (its
pyproject.toml and uvidm_backend/). `CommandRunner` runs those steps in a background thread
and reports progress; `BackendProcess` starts and stops the service. No bpy here.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# The torch release the backend is tested with (scripts/setup.sh pins the same one).
TORCH_PIN = "torch==2.13.0"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
EXTENSION_ROOT = Path(__file__).resolve().parent.parent  # where blender_manifest.toml and pyproject.toml are


def venv_python(venv: str | os.PathLike[str]) -> Path:
    venv = Path(venv)
    return venv / "Scripts" / "python.exe" if os.name == "nt" else venv / "bin" / "python"


def blender_python() -> str:
    """The Python that runs Blender's own scripts (Blender 4.2+ sets sys.executable to it)."""
    return sys.executable


def stage_backend_source(extension_root: str | os.PathLike[str], staging: str | os.PathLike[str]) -> Path:
    """Copy the installable backend (pyproject.toml, README.md, uvidm_backend/) to `staging`.

    pip builds in the source folder; the extension folder may be read-only and must not collect
    build/ and *.egg-info, so pip gets a copy.
    """
    root, staging = Path(extension_root), Path(staging)
    if not (root / "pyproject.toml").is_file() or not (root / "uvidm_backend").is_dir():
        raise FileNotFoundError(f"{root} does not contain the bundled backend (pyproject.toml, uvidm_backend/)")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    shutil.copy2(root / "pyproject.toml", staging / "pyproject.toml")
    readme = root / "README.md"
    if readme.is_file():
        shutil.copy2(readme, staging / "README.md")
    else:  # pyproject names it as the long description
        (staging / "README.md").write_text("UV-IDM backend\n", encoding="utf-8")
    shutil.copytree(root / "uvidm_backend", staging / "uvidm_backend",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    return staging


# PyTorch's own wheel indexes for CUDA builds, newest first, with the CUDA version each needs of the driver
# (assumed for torch 2.13 from the releases before it: cu126, cu128, cu130).
CUDA_BUILDS = ((13, 0), (12, 8), (12, 6))
PYTORCH_INDEX = "https://download.pytorch.org/whl"
TORCH_BUILDS = [
    ("AUTO", "Automatic", "NVIDIA driver found: a CUDA build; macOS: the default build (Apple GPU); else CPU"),
    ("CUDA", "NVIDIA GPU (CUDA)", "PyTorch's CUDA build for the driver's CUDA version (the newest without one)"),
    ("CPU", "CPU Only", "The smallest download; minutes per head"),
    ("DEFAULT", "Package Registry Default", "Whatever pip installs from PyPI (CPU-only on Windows, CUDA on Linux)"),
    ("CUSTOM", "Custom Index", "torch from the index URL below"),
]


@dataclass(frozen=True)
class TorchBuild:
    """Which torch wheel Set Up Environment installs: `index_url` for pip ('' = the package registry)."""

    label: str
    index_url: str
    reason: str


def driver_cuda_version(run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> tuple[int, int] | None:
    """The CUDA version the NVIDIA driver supports, read from `nvidia-smi` (no torch needed); None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = run(["nvidia-smi"], capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", done.stdout or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def choose_torch_build(choice: str, system: str, cuda: tuple[int, int] | None, custom_index: str = "") -> TorchBuild:
    """The build for the preference `choice` (TORCH_BUILDS) on `system` (platform.system()) with the driver's CUDA."""
    if choice == "CUSTOM" and custom_index.strip():
        return TorchBuild("custom index", custom_index.strip(), "the index URL set in the preferences")
    if choice == "DEFAULT":
        return TorchBuild("package registry default", "", "chosen in the preferences")
    if choice == "CPU":
        return TorchBuild("CPU only", "" if system == "Darwin" else f"{PYTORCH_INDEX}/cpu", "chosen in the preferences")
    if choice == "CUDA" or (choice == "AUTO" and cuda is not None and system != "Darwin"):
        fitting = [build for build in CUDA_BUILDS if cuda is None or build <= cuda]
        if not fitting:
            return TorchBuild("CPU only", f"{PYTORCH_INDEX}/cpu",
                              f"the NVIDIA driver supports CUDA {cuda[0]}.{cuda[1]}, older than the oldest CUDA build "
                              f"of torch ({CUDA_BUILDS[-1][0]}.{CUDA_BUILDS[-1][1]}): update the driver for the GPU")
        major, minor = fitting[0]
        why = (f"an NVIDIA driver for CUDA {cuda[0]}.{cuda[1]} was found (nvidia-smi)" if cuda is not None
               else "chosen in the preferences (no NVIDIA driver found: the newest CUDA build)")
        return TorchBuild(f"CUDA {major}.{minor}", f"{PYTORCH_INDEX}/cu{major}{minor}", why)
    if system == "Darwin":
        return TorchBuild("default build (Apple GPU)", "", "macOS: the package registry's build uses the Apple GPU")
    return TorchBuild("CPU only", f"{PYTORCH_INDEX}/cpu", "no NVIDIA driver found (nvidia-smi): the smallest build")


def venv_problem(python: str, timeout: float = 30.0) -> str | None:
    """Why `python -m venv` cannot work with this Python (Debian's python3 without python3-venv...), or None."""
    try:
        done = subprocess.run([python, "-c", "import venv, ensurepip"], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"Cannot run Blender's Python {python} ({error})."
    if done.returncode == 0:
        return None
    return (f"Blender's Python ({python}) lacks the venv module, so it cannot make an environment. On Debian or "
            "Ubuntu install python3-venv (sudo apt install python3-venv), or use the backend mode 'Local, Own "
            "Python' with a Python that has the backend installed.")


@dataclass(frozen=True)
class Step:
    """One command of a setup; `weight` is its share of the progress bar."""

    label: str
    argv: tuple[str, ...]
    weight: float = 1.0


def setup_steps(base_python: str, venv: str | os.PathLike[str], source: str | os.PathLike[str],
                torch_spec: str = TORCH_PIN, extra_packages: Sequence[str] = (),
                build: TorchBuild | None = None) -> list[Step]:
    """The commands that make `venv` with the backend installed from `source`; torch pinned first,
    as scripts/setup.sh does (an open range would pull the newest multi-GB build), from the build's
    index (PyTorch's own for CUDA and CPU builds); the backend then from the package registry, where
    the installed torch (2.13.0+cu128 is 2.13.0) satisfies the pin."""
    python = str(venv_python(venv))
    pip = (python, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off")
    index = ("--index-url", build.index_url) if build is not None and build.index_url else ()
    label = f"{torch_spec}, {build.label}" if build is not None else torch_spec
    steps = [
        Step("Creating the Python environment", (base_python, "-m", "venv", str(venv)), 0.05),
        Step("Updating pip", (*pip, "--upgrade", "pip"), 0.05),
        Step(f"Installing {label} (a large download)", (*pip, *index, torch_spec), 0.6),
        Step("Installing the UV-IDM backend", (*pip, str(source), torch_spec), 0.25),
    ]
    if extra_packages:
        steps.append(Step("Installing extra packages", (*pip, *extra_packages), 0.05))
    return steps


class CommandRunner:
    """Run steps one after the other in a thread; poll `progress`, `message`, `done`, `error`.

    Output goes to `log_file` and the last lines to `tail` (shown when a step fails).
    """

    def __init__(self, steps: Sequence[Step], log_file: str | os.PathLike[str] | None = None,
                 env: dict[str, str] | None = None, on_success: Callable[[], None] | None = None):
        self.steps = list(steps)
        self.on_success = on_success
        self.log_file = Path(log_file) if log_file else None
        self.env = env
        self.progress = 0.0
        self.message = "Waiting"
        self.done = False
        self.error: str | None = None
        self.tail: deque[str] = deque(maxlen=30)
        self._process: subprocess.Popen | None = None
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="uvidm-setup", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def cancel(self) -> None:
        self._cancelled.set()
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()

    def run(self) -> bool:
        total = sum(step.weight for step in self.steps) or 1.0
        finished = 0.0
        log_handle = open(self.log_file, "a", encoding="utf-8") if self.log_file else None
        try:
            for index, step in enumerate(self.steps, 1):
                if self._cancelled.is_set():
                    self.error = "Cancelled"
                    return False
                self.message = f"{step.label} ({index}/{len(self.steps)})"
                if log_handle:
                    log_handle.write(f"$ {subprocess.list2cmdline(step.argv)}\n")
                    log_handle.flush()
                code = self._run_step(step, log_handle)
                if self._cancelled.is_set():
                    self.error = "Cancelled"
                    return False
                if code != 0:
                    last = next((line for line in reversed(self.tail) if line.strip()), "no output")
                    self.error = f"{step.label} failed (exit code {code}): {last}"
                    return False
                finished += step.weight
                self.progress = finished / total
            if self.on_success is not None:
                self.on_success()
            self.message = "Done"
            return True
        except OSError as error:
            self.error = f"{self.message}: cannot run {error.filename or 'the command'} ({error.strerror or error})"
            return False
        finally:
            self.done = True
            if log_handle:
                if self.error:
                    log_handle.write(f"!! {self.error}\n")
                log_handle.close()

    def _run_step(self, step: Step, log_handle) -> int:
        with self._lock:
            self._process = subprocess.Popen(
                step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self.env, text=True, encoding="utf-8", errors="replace", **_background_flags())
            process = self._process
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            self.tail.append(line)
            if log_handle:
                log_handle.write(line + "\n")
                log_handle.flush()
        return process.wait()


def _background_flags() -> dict:
    """No console window on Windows; own session on POSIX, so Blender's Ctrl+C does not reach it."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {"start_new_session": True}


def serve_command(python: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, weights: str = "",
                  bfm: str = "", device: str = "", jobs_dir: str = "") -> list[str]:
    """`python -m uvidm_backend.cli serve ...` (`uvidm serve`, whatever the scripts folder is called)."""
    argv = [python, "-m", "uvidm_backend.cli", "serve", "--host", host, "--port", str(port)]
    if jobs_dir:
        argv += ["--jobs-dir", jobs_dir]
    if weights:
        argv += ["--weights", weights]
    if bfm:
        argv += ["--bfm", bfm]
    if device:
        argv += ["--device", device]
    return argv


def model_subfolders(model_folder: str | os.PathLike[str]) -> tuple[str, str]:
    """(weights, BFM) folders of a model folder laid out like the repository (weights/, BFM/)."""
    if not model_folder:
        return "", ""
    root = Path(model_folder).expanduser()
    return str(root / "weights"), str(root / "BFM")


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_in_use(port: int, host: str = DEFAULT_HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


class BackendProcess:
    """A `uvidm serve` started by the add-on; its output goes to `log_file`."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.log_file: Path | None = None
        self.argv: list[str] = []
        self.port: int | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def start(self, argv: Sequence[str], log_file: str | os.PathLike[str], env: dict[str, str] | None = None,
              port: int | None = None) -> None:
        if self.running:
            return
        self.port = port
        self.log_file = Path(log_file)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.argv = list(argv)
        with open(self.log_file, "w", encoding="utf-8") as handle:
            handle.write(f"$ {subprocess.list2cmdline(self.argv)}\n")
            handle.flush()
            self.process = subprocess.Popen(self.argv, stdout=handle, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env, **_background_flags())
        log.info("started backend (pid %s): %s", self.process.pid, self.argv)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask it to stop (SIGTERM / CTRL_BREAK), kill it when it does not within `timeout`."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            if os.name == "nt":
                process.send_signal(signal.CTRL_BREAK_EVENT)
            else:
                process.terminate()
            process.wait(timeout)
        except (subprocess.TimeoutExpired, OSError):
            process.kill()
            process.wait(timeout)
        log.info("stopped backend (pid %s)", process.pid)

    def log_tail(self, lines: int = 20) -> list[str]:
        if self.log_file is None or not self.log_file.is_file():
            return []
        with open(self.log_file, encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=lines)]


def check_python(python: str, timeout: float = 60.0) -> tuple[bool, str]:
    """Does `python` run and import the backend? (ok, words); blocking: call it from a thread."""
    code = "import uvidm_backend, torch; print(uvidm_backend.__version__, torch.__version__)"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"Cannot run {python}: {error}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"{python} cannot import the backend ({last}); set up the environment again"
    backend, torch = done.stdout.split()[:2]
    return True, f"backend {backend}, torch {torch}"
