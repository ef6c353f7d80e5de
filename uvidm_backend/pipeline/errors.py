"""Errors a user can act on. Each message says what went wrong and what to do."""

from __future__ import annotations


class UVIDMError(Exception):
    """Base of the errors the backend reports to users (CLI, service, Blender)."""


class InputError(UVIDMError, ValueError):
    """The photo or the options cannot be used (not an image, no face, face too small, ...)."""


class ModelFilesMissing(UVIDMError, FileNotFoundError):
    def __init__(self, missing: list[str], command: str):
        self.missing = missing
        self.command = command
        super().__init__(f"model files missing: {', '.join(missing)}. Get them with `{command}`")


class Cancelled(UVIDMError):
    """Raised from a progress callback to stop a job between steps."""
