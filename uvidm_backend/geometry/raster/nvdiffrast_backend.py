"""nvdiffrast backend (CUDA): ``nvdiffrast.torch.rasterize`` converted to ``RasterOutput``.

The official UV-IDM code renders with nvdiffrast; this wrapper keeps its numbers where it is
installed. nvdiffrast is optional: this module imports without it, and ``available()`` says
whether it can be used.

nvdiffrast returns per pixel ``(u, v, z/w, triangle_id + 1)``, zeros where empty, with ``u`` the
(perspective-correct) weight of the triangle's vertex 0, ``v`` that of vertex 1 and ``1 - u - v``
that of vertex 2 (``interpolate.cu``: ``b0 * a0 + b1 * a1 + (1 - b0 - b1) * a2``). Its CUDA
rasterizer snaps vertices to 1/16 pixel, so coverage can differ from the PyTorch backend for pixel
centres within that distance of an edge.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from .base import RasterOutput, check_inputs


def available() -> bool:
    """True when CUDA and the ``nvdiffrast`` package are both present (nothing is compiled here)."""
    return torch.cuda.is_available() and importlib.util.find_spec("nvdiffrast") is not None


def _float_to_triangle_id(value: Tensor) -> Tensor:
    """nvdiffrast's ``float_to_triidx``: ids above 2**24 are stored as biased float bit patterns."""
    as_int = value.to(torch.int64)
    biased = value.contiguous().view(torch.int32).to(torch.int64) - 0x4A800000
    return torch.where(value <= 16777216.0, as_int, biased)


def from_nvdiffrast(rast: Tensor) -> RasterOutput:
    """Converts nvdiffrast's (B, H, W, 4) raster output to a ``RasterOutput``."""
    face = _float_to_triangle_id(rast[..., 3]) - 1
    covered = face >= 0
    u, v = rast[..., 0], rast[..., 1]
    bary = torch.stack([u, v, 1.0 - u - v], -1) * covered.unsqueeze(-1)
    depth = torch.where(covered, rast[..., 2], float("inf"))
    return RasterOutput(triangle_id=face.clamp(min=-1), barycentric=bary.float(), depth=depth.float())


class NvdiffrastRasterizer:
    """Rasterizer backend on ``nvdiffrast.torch.RasterizeCudaContext`` (one context per instance)."""

    name = "nvdiffrast"

    def __init__(self, device: torch.device | str = "cuda") -> None:
        import nvdiffrast.torch as dr  # optional dependency: imported only when asked for

        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"nvdiffrast needs a CUDA device, got {device}")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self.device = device
        self._dr = dr
        self._context = dr.RasterizeCudaContext(device=device)

    def __repr__(self) -> str:
        return f"NvdiffrastRasterizer(device={self.device})"

    def rasterize(self, clip_pos: Tensor, triangles: Tensor, resolution: tuple[int, int]) -> RasterOutput:
        """Rasterises ``triangles`` of ``clip_pos`` (B, N, 4) into (B, H, W) buffers."""
        clip_pos, triangles, height, width = check_inputs(clip_pos, triangles, resolution)
        pos = clip_pos.to(device=self.device, dtype=torch.float32).contiguous()
        tri = triangles.to(device=self.device, dtype=torch.int32).contiguous()
        rast, _ = self._dr.rasterize(self._context, pos, tri, resolution=[height, width])
        return from_nvdiffrast(rast)
