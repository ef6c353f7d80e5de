"""Errors a user can act on. Each message says what went wrong and what to do."""

from __future__ import annotations

from uvidm_backend.errors import UVIDMError

__all__ = ["Cancelled", "InputError", "ModelFilesMissing", "UVIDMError"]


class InputError(UVIDMError, ValueError):
    """The photo or the options cannot be used (not an image, no face, face too small, ...)."""


class ModelFilesMissing(UVIDMError, FileNotFoundError):
    def __init__(self, missing: list[str], command: str):
        self.missing = missing
        self.command = command
        super().__init__(f"model files missing: {', '.join(missing)}. Get them with `{command}`")


class Cancelled(UVIDMError):
    """Raised from a progress callback to stop a job between steps."""
