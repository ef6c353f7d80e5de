"""What the add-on holds while Blender runs (not saved in .blend files, not undone): the backend
process it started, the environment setup in progress, the generate job. No bpy here."""

from __future__ import annotations

from dataclasses import dataclass, field

from .backend import BackendProcess, CommandRunner
from .jobs import GenerateJob


@dataclass
class Runtime:
    backend: BackendProcess = field(default_factory=BackendProcess)
    setup: CommandRunner | None = None
    generate: GenerateJob | None = None
    backend_text: str = ""  # the last "Check backend" answer, in words
    backend_ok: bool | None = None

    def shutdown(self) -> None:
        """Cancel what runs and stop the backend we started (add-on disabled, Blender quitting)."""
        if self.generate is not None:
            self.generate.cancel()
        if self.setup is not None and self.setup.running:
            self.setup.cancel()
        self.backend.stop()


STATE = Runtime()
