"""preview.png: the textured, lit head drawn over the photo, to judge the fit at a glance."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from uvidm_backend.geometry.camera import depth_to_ndc
from uvidm_backend.geometry.raster import interpolate, pixels_to_clip

MAX_PREVIEW_SIDE = 1024


def preview_scale(width: int, height: int) -> float:
    return min(1.0, MAX_PREVIEW_SIDE / max(width, height))


def render_preview(rasterizer, photo01: Tensor, projected: Tensor, depth: Tensor, triangles: Tensor,
                   uv: Tensor, albedo: Tensor, shading: Tensor) -> Tensor:
    """Draws the head over the photo.

    photo01 (B, 3, H, W) in [0, 1] (already at preview size); projected (B, N, 2) vertex
    positions in its pixels (x right, y down); depth (B, N) distance from the camera; uv (N, 2)
    with v up; albedo (B, 3, S, S); shading (B, N, 3) per-vertex SH shading. Returns (B, 3, H, W).
    """
    height, width = photo01.shape[-2:]
    clip = pixels_to_clip(projected, height, width, depth_to_ndc(depth))
    raster = rasterizer.rasterize(clip.float().contiguous(), triangles.int(), (height, width))
    covered = (raster.triangle_id >= 0).unsqueeze(1).to(photo01.dtype)  # (B, 1, H, W)
    pixel_uv = interpolate(uv.to(photo01.dtype)[None], raster, triangles)  # (B, H, W, 2)
    # grid_sample's y runs down the image, UV v runs up.
    grid = torch.stack([pixel_uv[..., 0] * 2 - 1, 1 - pixel_uv[..., 1] * 2], dim=-1)
    color = F.grid_sample(albedo.to(photo01.dtype), grid, mode="bilinear", align_corners=True)
    light = interpolate(shading.to(photo01.dtype), raster, triangles).permute(0, 3, 1, 2)
    lit = (color * light).clamp(0, 1)
    return covered * lit + (1 - covered) * photo01
