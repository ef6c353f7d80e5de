"""Triangle rasterization with nvdiffrast's conventions, on nvdiffrast (CUDA) or pure PyTorch.

The official UV-IDM code renders with ``nvdiffrast.torch`` (``RasterizeCudaContext`` +
``rasterize`` + ``interpolate``). ``get_rasterizer`` picks nvdiffrast on a CUDA device where it is
installed and the PyTorch backend otherwise (CPU, or GPU without nvdiffrast); both return the same
``RasterOutput`` (see ``base`` for the conventions).

    raster = rasterize(clip_pos, triangles, (H, W))       # clip_pos (B, N, 4), triangles (F, 3)
    colours = interpolate(vertex_colours, raster, triangles)   # (B, H, W, C)
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import Tensor

from . import nvdiffrast_backend
from .base import Rasterizer, RasterOutput, interpolate, pixels_to_clip
from .nvdiffrast_backend import NvdiffrastRasterizer
from .torch_backend import TorchRasterizer

__all__ = [
    "BACKENDS",
    "NvdiffrastRasterizer",
    "RasterOutput",
    "Rasterizer",
    "TorchRasterizer",
    "get_rasterizer",
    "interpolate",
    "rasterize", "pixels_to_clip"]

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "nvdiffrast")


def _normalise_device(device: torch.device | str | None) -> torch.device:
    device = torch.device("cpu" if device is None else device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


@functools.cache
def _cached_rasterizer(device: torch.device, backend: str) -> Rasterizer:
    # One instance per (device, backend): an nvdiffrast context is costly to create and holds GPU buffers.
    if backend == "nvdiffrast":
        return NvdiffrastRasterizer(device)
    return TorchRasterizer(device)


@functools.cache
def _auto_nvdiffrast(device: torch.device) -> Rasterizer | None:
    """nvdiffrast for ``auto`` if it works on ``device`` (tried once: a failed build is not retried)."""
    if device.type != "cuda" or not nvdiffrast_backend.available():
        return None
    try:
        return _cached_rasterizer(device, "nvdiffrast")
    except Exception as error:  # a broken nvdiffrast build must not stop the pipeline
        logger.warning("nvdiffrast unusable on %s (%s); using the PyTorch rasterizer", device, error)
        return None


def get_rasterizer(device: torch.device | str | None = None, backend: str = "auto") -> Rasterizer:
    """The rasterizer for ``device`` (cached): ``"nvdiffrast"``, ``"torch"`` or ``"auto"``.

    ``"auto"`` takes nvdiffrast on a CUDA device when the package is installed (and falls back to
    the PyTorch backend, with a warning, if its context cannot be created), the PyTorch backend
    otherwise. Asking for ``"nvdiffrast"`` explicitly raises when it is unavailable.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown rasterizer backend {backend!r}; expected one of {BACKENDS}")
    device = _normalise_device(device)
    if backend == "auto":
        return _auto_nvdiffrast(device) or _cached_rasterizer(device, "torch")
    if backend == "nvdiffrast":
        if device.type != "cuda":
            raise ValueError(f"the nvdiffrast backend needs a CUDA device, got {device}")
        if not nvdiffrast_backend.available():
            raise ImportError("the nvdiffrast backend needs CUDA and the nvdiffrast package")
    return _cached_rasterizer(device, backend)


def rasterize(clip_pos: Tensor, triangles: Tensor, resolution: tuple[int, int], backend: str = "auto") -> RasterOutput:
    """Rasterises on ``clip_pos``'s device with ``get_rasterizer(clip_pos.device, backend)``.

    clip_pos: (B, N, 4) float32 clip-space positions; triangles: (F, 3) int vertex indices;
    resolution: (H, W). See ``RasterOutput`` for the outputs.
    """
    return get_rasterizer(clip_pos.device, backend).rasterize(clip_pos, triangles, resolution)
