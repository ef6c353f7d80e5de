"""`uvidm generate ... --ray [ADDRESS]`: placeholder until the Ray runner lands."""

from __future__ import annotations

from uvidm_backend.pipeline.errors import UVIDMError

INSTALL = 'pip install "uvidm-blender[ray]"'


class RayMissing(UVIDMError):
    """Ray is not installed."""


def run_with_ray(args, photos, base_options) -> int:
    raise RayMissing(f"--ray needs Ray: {INSTALL}")
