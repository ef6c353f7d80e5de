"""Depth-tested vertex visibility: what the camera really sees of the head.

The official UV unwrapping keeps a vertex when its normal faces the camera (`-n_z > 0.1`), which
lets through surfaces hidden behind others (the cheek behind the nose in a turned head, the
side of the head behind an ear). Rendering the mesh's depth and comparing each vertex with it
removes those; the result is ANDed into `remap_texture_from_image(vertex_visibility=...)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from uvidm_backend.geometry.camera import CENTER, Z_FAR, Z_NEAR, depth_to_ndc
from uvidm_backend.geometry.raster import pixels_to_clip

# A vertex counts as visible when it is at most this far (BFM units: 10 cm each, so 2 mm) behind
# the nearest rendered surface around its pixel.
DEPTH_TOLERANCE = 0.02


def depth_visible_vertices(projXY: Tensor, depth: Tensor, triangles: Tensor, rasterizer, resolution: int = 448,
                           tolerance: float = DEPTH_TOLERANCE, crop_size: float = 2 * CENTER) -> Tensor:
    """(B, N) bool: vertices not hidden behind another part of the mesh.

    projXY (B, N, 2) crop pixel coordinates (`camera.project`), depth (B, N) distance from the camera
    (z of `camera.to_camera`), triangles (F, 3). The depth is rendered at `resolution` over the crop;
    each vertex is compared with the farthest surface in the 3x3 pixels around it, so vertices on a
    silhouette, whose pixel may belong to the background or a neighbouring triangle, are not lost.
    """
    # The crop's coordinates span [0, crop_size] edge to edge; rendered at `resolution` pixels, edges outward.
    ndc_z = depth_to_ndc(depth)
    clip = pixels_to_clip(projXY * (resolution / crop_size) - 0.5, resolution, resolution, ndc_z)
    ndc = clip[..., :2]
    raster = rasterizer.rasterize(clip.float().contiguous(), triangles.int(), (resolution, resolution))
    surface = raster.depth.masked_fill(raster.triangle_id < 0, 1.0)  # background: the far plane
    farthest = F.max_pool2d(surface.unsqueeze(1), 3, stride=1, padding=1).squeeze(1)
    pixel = ((ndc + 1) / 2 * resolution).floor().long().clamp(0, resolution - 1)
    batch = torch.arange(projXY.shape[0], device=projXY.device).unsqueeze(1)
    nearest = farthest[batch, pixel[..., 1], pixel[..., 0]]
    tolerance_ndc = tolerance / (Z_FAR - Z_NEAR) * 2
    return ndc_z <= nearest + tolerance_ndc
