"""UV space of the whole-head BFM: vertex <-> texture lookups and photo -> UV remapping.

Official counterparts (UV-IDM): `process_uv`, `my_render_colors_ras_torch`
(`scripts/visualize.py`) and `remap_tex_from_input2D` (`ldm/modules/encoders/modules.py`).
UV pixel coordinates follow `process_uv`: x = u (W - 1), y = H - 1 - v (H - 1), rows from the top.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import Tensor

# `remap_tex_from_input2D`: a vertex counts as facing the camera when its rotated normal has
# -n_z > 0.1, and a UV pixel is visible when the barycentric blend of its 3 vertices' flags > 0.5.
NORMAL_VISIBILITY_THRESHOLD = 0.1
INTERPOLATED_VISIBILITY_THRESHOLD = 0.5


def process_uv(uv: ArrayLike, height: int = 256, width: int = 256) -> np.ndarray:
    """(N, 2) UV in [0, 1] -> (N, 3) float64 pixel coordinates (x, y, 0) of an H x W map, y down.

    Unlike the official function, the argument is not modified (trap 13); the arithmetic runs
    in the input's float dtype, as the official in-place version does.
    """
    uv = np.array(uv, copy=True)
    if not np.issubdtype(uv.dtype, np.floating):
        uv = uv.astype(np.float64)
    uv[:, 0] = uv[:, 0] * (width - 1)
    uv[:, 1] = uv[:, 1] * (height - 1)
    uv[:, 1] = height - uv[:, 1] - 1
    return np.hstack((uv[:, :2], np.zeros((uv.shape[0], 1))))


def resize_uv_map(uv_map: Tensor, size: int) -> Tensor:
    """(B, C, S, S) UV map -> (B, C, size, size) bicubic, registered to the UV tables of both sizes.

    Texel c of an S-texel map holds u = c / (S - 1) (`process_uv`): the first and last texel
    centres sit on u = 0 and u = 1 at every size, so the resize maps corner centres onto corner
    centres (`align_corners=True`). The default half-texel convention would shift the map by up
    to (N/S - 1) / 2 output texels at the borders (1.5 px at 256 -> 1024). Values may overshoot
    the input's range a little (bicubic); the caller clamps.
    """
    if uv_map.shape[-2:] == (size, size):
        return uv_map
    return F.interpolate(uv_map, (size, size), mode="bicubic", align_corners=True)


def render_vertex_colors_uv(colors: Tensor, triangles: Tensor, triangle_buffer: Tensor,
                            barycentric_weight: Tensor) -> Tensor:
    """Per-vertex colours (B, N, C) -> (B, C, S, S) UV map, through a precomputed UV rasterisation.

    Official `my_render_colors_ras_torch`: pixel = sum_k bw[r, c, k] * colors[tri[tb[r, c], k]];
    pixels outside the mesh have zero weights (black).
    """
    size = triangle_buffer.shape
    corners = triangles[triangle_buffer.reshape(-1)]  # (S*S, 3)
    weight = barycentric_weight.reshape(-1, 3).unsqueeze(2)  # (S*S, 3, 1)
    image = (weight * colors[:, corners, :]).sum(dim=2)  # (B, S*S, C)
    return image.reshape(colors.shape[0], *size, colors.shape[2]).permute(0, 3, 1, 2)


def uv_vertex_index(triangles: Tensor, triangle_buffer: Tensor) -> Tensor:
    """(S, S, 3) the three vertices of each UV pixel's face (`Deep3dEncoder.unwrap_uv_idx_v_idx`)."""
    return triangles[triangle_buffer]


def _blend(values: Tensor, uv_vertex_index: Tensor, barycentric_weight: Tensor) -> Tensor:
    """Barycentric blend of per-vertex values (B, N, ...) -> (B, S, S, ...), in the official order."""
    extra = (None,) * (values.dim() - 2)
    out = None
    for k in range(3):
        term = values[:, uv_vertex_index[:, :, k]] * barycentric_weight[(None, slice(None), slice(None), k, *extra)]
        out = term if out is None else out + term
    return out


def remap_texture_from_image(image: Tensor, projXY_ori: Tensor, rotated_normals: Tensor, seg_mask: Tensor,
                             uv_vertex_index: Tensor, barycentric_weight: Tensor,
                             vertex_visibility: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Samples the photo into UV space: (B, C, H, W) in [0, 1] -> texture (B, C, S, S), mask (B, 1, S, S).

    Official `remap_tex_from_input2D`. projXY_ori (B, N, 2) are photo pixel coordinates of the
    vertices (x right, y down), rotated_normals (B, N, 3) camera-facing normals, seg_mask (B, H, W)
    the skin mask. The pixel -> grid_sample mapping `x / (W // 2) - 1` (align_corners=False, no
    half-pixel offset, integer half size) is kept literally (trap 3). `vertex_visibility` (B, N)
    bool, if given, is ANDed with the normal test (e.g. a depth test that removes occluded
    vertices, which the official code lacks).
    """
    _, _, height, width = image.shape
    weight = barycentric_weight.to(projXY_ori.dtype)
    grid = _blend(projXY_ori, uv_vertex_index, weight)  # (B, S, S, 2)
    grid = torch.stack([grid[..., 0] / (width // 2) - 1.0, grid[..., 1] / (height // 2) - 1.0], dim=-1)
    grid = grid.to(image.dtype)
    texture = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    texture = texture.clamp(0.0, 1.0)
    seg = F.grid_sample(seg_mask.unsqueeze(1).to(image.dtype), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)

    visible = -rotated_normals[..., 2] > NORMAL_VISIBILITY_THRESHOLD
    if vertex_visibility is not None:
        visible = visible & vertex_visibility.to(torch.bool)
    visible = _blend(visible.to(weight.dtype), uv_vertex_index, weight)
    mask = (visible > INTERPOLATED_VISIBILITY_THRESHOLD).to(image.dtype).unsqueeze(1) * seg
    return texture * mask, mask
