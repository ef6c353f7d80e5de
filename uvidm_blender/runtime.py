"""What the add-on holds while Blender runs (not saved in .blend files, not undone): the backend
process it started, the environment setup in progress, the generate job, the last answers. No bpy here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .backend import BackendProcess, CommandRunner, driver_cuda_version
from .downloads import ModelDownload
from .jobs import GenerateJob

_UNKNOWN = ("unknown",)


@dataclass(frozen=True)
class FoundFaces:
    """POST /v1/faces' answer for one photo (and landmarks file): how many, the largest, the overview image."""

    count: int
    largest: int | None
    overview: Path
    source: str


@dataclass
class Runtime:
    backend: BackendProcess = field(default_factory=BackendProcess)
    setup: CommandRunner | None = None
    generate: GenerateJob | None = None
    backend_text: str = ""  # the last "Check backend" answer, in words
    backend_ok: bool | None = None
    backend_key: tuple = ()  # the (mode, URL) that answer is about: shown only while they are still chosen
    faces: dict[tuple[str, str], FoundFaces] = field(default_factory=dict)  # by (photo, landmarks file)
    health: dict | None = None  # the last health answer of the backend `health_key` names
    health_key: tuple = ()
    model_plan: dict | None = None  # GET /v1/models/plan's answer, shown before a download (for `plan_key`)
    plan_key: tuple = ()
    model_download: ModelDownload | None = None
    _driver_cuda: tuple = _UNKNOWN

    @property
    def driver_cuda(self) -> tuple[int, int] | None:
        """The NVIDIA driver's CUDA version (nvidia-smi, asked once a session), None without a driver."""
        if self._driver_cuda == _UNKNOWN:
            self._driver_cuda = driver_cuda_version()
        return self._driver_cuda

    def shutdown(self) -> None:
        """Cancel what runs and stop the backend we started (add-on disabled, Blender quitting)."""
        if self.generate is not None:
            self.generate.cancel()
            self.generate = None  # the panel is free again at once, whatever the cancelled thread still does
        if self.setup is not None and self.setup.running:
            self.setup.cancel()
        self.model_download = None  # the backend downloads; a remote one goes on, a local one stops below
        self.backend.stop()


STATE = Runtime()
