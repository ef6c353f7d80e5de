"""What every rasterizer backend returns, and attribute interpolation on top of it.

The conventions are nvdiffrast's (``nvdiffrast.torch.rasterize``), so that the CUDA backend and the
pure-PyTorch one are interchangeable:

- vertices come in clip space ``(x, y, z, w)``; pixel ``(row i, column j)`` has its centre at
  ``ndc = ((j + 0.5) / W * 2 - 1, (i + 0.5) / H * 2 - 1)``, so row 0 is at ndc ``y = -1``
  (the image is "upside down" compared with a picture whose first row is the top);
- the depth test keeps the smallest ``z / w``; pixels whose ``z / w`` falls outside [-1, 1]
  are clipped away (near/far planes);
- triangles of either winding are drawn (no back-face culling).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class RasterOutput:
    """Per-pixel visibility of a rasterised mesh.

    triangle_id: (B, H, W) int64, index into ``triangles`` of the visible triangle, -1 where
        no triangle covers the pixel centre.
    barycentric: (B, H, W, 3) float32 perspective-correct weights of the triangle's three vertices
        (``barycentric[..., k]`` belongs to vertex ``triangles[triangle_id, k]``); they sum to 1
        where covered and are 0 where empty.
    depth: (B, H, W) float32 ``z / w`` of the visible surface; ``+inf`` where empty (0 would be a
        valid depth in the middle of the clip range).
    """

    triangle_id: Tensor
    barycentric: Tensor
    depth: Tensor

    @property
    def mask(self) -> Tensor:
        """(B, H, W) bool, True where a triangle covers the pixel centre."""
        return self.triangle_id >= 0

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.triangle_id.shape[1]), int(self.triangle_id.shape[2])


class Rasterizer(Protocol):
    """A backend: ``rasterize(clip_pos (B,N,4), triangles (F,3), (H, W)) -> RasterOutput``."""

    name: str
    device: torch.device

    def rasterize(self, clip_pos: Tensor, triangles: Tensor, resolution: tuple[int, int]) -> RasterOutput: ...


def check_inputs(clip_pos: Tensor, triangles: Tensor, resolution) -> tuple[Tensor, Tensor, int, int]:
    """Validates and normalises the arguments shared by all backends.

    Returns clip_pos as (B, N, 4) float32, or float64 if given so (a single (N, 4) mesh becomes
    B = 1), triangles as (F, 3) int64 on the same device, and the integer (H, W).
    """
    if clip_pos.ndim == 2:
        clip_pos = clip_pos.unsqueeze(0)
    if clip_pos.ndim != 3 or clip_pos.shape[-1] != 4:
        raise ValueError(f"clip_pos must be (B, N, 4) clip-space positions, got {tuple(clip_pos.shape)}")
    if triangles.ndim != 2 or triangles.shape[-1] != 3:
        raise ValueError(f"triangles must be (F, 3) vertex indices, got {tuple(triangles.shape)}")
    if triangles.is_floating_point():
        raise TypeError("triangles must be an integer tensor")
    height, width = (int(v) for v in resolution)
    if height <= 0 or width <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    low, high = _index_range(triangles)
    if low < 0 or high >= clip_pos.shape[1]:
        raise IndexError(f"triangle vertex index out of range for {clip_pos.shape[1]} vertices")
    triangles = triangles.to(device=clip_pos.device, dtype=torch.int64)
    if clip_pos.dtype != torch.float64:
        clip_pos = clip_pos.to(torch.float32)
    return clip_pos, triangles, height, width


# The index range of the triangle tensors seen last, by identity: finding it on a GPU waits for the GPU, and a
# model passes the same triangles for every photo. Holding the tensor keeps its id from being reused; its
# version counter tells whether it was written to since.
_RANGES: dict[int, tuple[Tensor, int, int, int]] = {}
_RANGES_KEPT = 8
_RANGES_LOCK = threading.Lock()


def _index_range(triangles: Tensor) -> tuple[int, int]:
    """(smallest, largest) vertex index of `triangles` ((0, -1) when empty)."""
    if not triangles.numel():
        return 0, -1
    version = None if triangles.is_inference() else triangles._version  # inference tensors have none: not kept
    with _RANGES_LOCK:
        hit = _RANGES.get(id(triangles))
    if version is not None and hit is not None and hit[0] is triangles and hit[1] == version:
        return hit[2], hit[3]
    low, high = (int(v) for v in torch.aminmax(triangles))
    if version is not None:
        with _RANGES_LOCK:
            _RANGES[id(triangles)] = (triangles, version, low, high)
            while len(_RANGES) > _RANGES_KEPT:
                _RANGES.pop(next(iter(_RANGES)))
    return low, high


def pixels_to_clip(pixels: Tensor, height: int, width: int, ndc_z: Tensor | None = None) -> Tensor:
    """(B, N, 2) pixel coordinates (x = column, y = row, centres at integers) -> (B, N, 4) clip coordinates
    that put them at those pixels of an H x W raster: ``(x + 0.5) / W * 2 - 1``, likewise y; z = `ndc_z`
    (B, N) or 0, w = 1 (already projected: barycentrics are screen-space). Keeps the input's dtype."""
    x = (pixels[..., 0] + 0.5) / width * 2 - 1
    y = (pixels[..., 1] + 0.5) / height * 2 - 1
    z = torch.zeros_like(x) if ndc_z is None else ndc_z.to(x.dtype)
    return torch.stack([x, y, z, torch.ones_like(x)], dim=-1)


def interpolate(attributes: Tensor, raster: RasterOutput, triangles: Tensor) -> Tensor:
    """Interpolates per-vertex attributes at every pixel with the raster's barycentrics.

    The counterpart of ``nvdiffrast.torch.interpolate`` (without derivatives). ``attributes`` is
    (N, C), shared by the batch, or (B, N, C); returns (B, H, W, C), zero where no triangle is
    visible. Differentiable with respect to ``attributes``.
    """
    tid = raster.triangle_id
    batch, height, width = tid.shape
    if attributes.ndim not in (2, 3):
        raise ValueError(f"attributes must be (N, C) or (B, N, C), got {tuple(attributes.shape)}")
    triangles = triangles.to(device=tid.device, dtype=torch.int64)
    mask = tid >= 0
    # index_select rather than advanced indexing: several times faster on CPU.
    corners = triangles.index_select(0, tid.clamp(min=0).view(-1)).view(batch, -1, 3)  # (B, HW, 3)
    if attributes.ndim == 3:
        if attributes.shape[0] not in (1, batch):
            raise ValueError(f"attributes batch {attributes.shape[0]} does not match raster batch {batch}")
        n_vertices = attributes.shape[1]
        attributes = attributes.expand(batch, -1, -1).reshape(batch * n_vertices, -1)
        corners = corners + torch.arange(batch, device=tid.device).view(batch, 1, 1) * n_vertices
    bary = raster.barycentric.to(attributes.dtype).view(batch, -1, 3)
    out = None
    for k in range(3):
        values = attributes.index_select(0, corners[..., k].reshape(-1)).view(batch, height * width, -1)
        term = bary[..., k : k + 1] * values
        out = term if out is None else out + term
    out = out.view(batch, height, width, -1)
    return torch.where(mask.unsqueeze(-1), out, torch.zeros((), dtype=out.dtype, device=out.device))
