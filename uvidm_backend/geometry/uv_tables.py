"""UV lookup tables: which triangle covers each texel of the UV map, with which weights.

The official UV-IDM code ships them as ``BFM/triangle_buffer.npy`` and
``BFM/barycentric_weight.npy`` (S = 256) and uses them in ``my_render_colors_ras_torch``
(vertex colours -> UV image) and ``remap_tex_from_input2D`` (photo -> UV texture); here they are
computed from the UV layout with the rasterizer, at any resolution (256 for the model, 1024-2048
for output textures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .raster import TorchRasterizer, pixels_to_clip
from .uv import process_uv, uv_vertex_index


def uv_lookup_tables(
    uv: Tensor | np.ndarray,
    triangles: Tensor | np.ndarray,
    size: int | tuple[int, int] = 256,
    *,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Rasterises the UV layout into the official lookup-table format.

    uv: (N, 2) per-vertex texture coordinates in [0, 1] (v up); triangles: (F, 3) 0-based.
    size: S (square, as in the official code) or (H, W). Texel (r, c) is sampled at x = c, y = r
    of ``process_uv`` pixel coordinates. Computed on ``device`` (default: uv's device, else CPU)
    with the PyTorch rasterizer and its inclusive fill rule, so texels exactly on the border of the
    layout are covered and the tables are the same on every device (where two triangles share
    a texel on their common edge, the lower triangle index is kept).

    Returns ``triangle_buffer`` (H, W) int64 (0 where no triangle covers the texel, as in the
    official files) and ``barycentric_weight`` (H, W, 3) float32 (all 0 where uncovered), where
    ``barycentric_weight[..., k]`` belongs to vertex ``triangles[triangle_buffer, k]``. Unlike the
    official files, whose weights are quantised to multiples of 1/63, the weights are exact.
    """
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if device is None:
        device = uv.device if isinstance(uv, Tensor) else torch.device("cpu")
    device = torch.device(device)
    uv = torch.as_tensor(uv).to(device)
    triangles = torch.as_tensor(triangles).to(device=device, dtype=torch.int64)
    if uv.ndim != 2 or uv.shape[1] != 2:
        raise ValueError(f"uv must be (N, 2), got {tuple(uv.shape)}")

    # texel coordinates of the official `process_uv`, in float64 whatever the UVs' dtype
    pixels = torch.from_numpy(process_uv(uv.detach().cpu().double().numpy(), height, width)[:, :2]).to(device)
    clip = pixels_to_clip(pixels[None], height, width)  # texel (r, c)'s centre at pixel (row r, column c)
    rasterizer = TorchRasterizer(device, fill_rule="inclusive")
    # float64 clip coordinates: texel centres on vertices or edges stay exactly on them.
    raster = rasterizer.rasterize(clip, triangles, (height, width))
    triangle_buffer = raster.triangle_id[0].clamp(min=0)
    return triangle_buffer, raster.barycentric[0].contiguous()


@dataclass(frozen=True, eq=False)
class UVLayout:
    """The UV lookup tables of the whole-head mesh at one texture size, as the stages read them."""

    triangle_buffer: Tensor  # (S, S) int64
    barycentric_weight: Tensor  # (S, S, 3) float32
    vertex_index: Tensor  # (S, S, 3) the three vertices of each texel's triangle (`unwrap_uv_idx_v_idx`)

    @property
    def size(self) -> int:
        return int(self.triangle_buffer.shape[-1])


class UVLayouts:
    """`UVLayout`s of one mesh by texture size, each built once (`uv_lookup_tables`), on `device`.

    `official` gives the tables of the BFM folder (`triangle_buffer.npy`, `barycentric_weight.npy`) for
    their own size; the others are rasterised from the UVs.
    """

    def __init__(self, uv: Tensor, triangles: Tensor, device: torch.device,
                 official: tuple[np.ndarray, np.ndarray] | None = None):
        self.uv, self.triangles, self.device = uv.to(device), triangles.to(device), device
        self._layouts: dict[int, UVLayout] = {}
        if official is not None:
            buffer, weight = (torch.from_numpy(np.asarray(table)).to(device) for table in official)
            self._layouts[int(buffer.shape[-1])] = self._layout(buffer.long(), weight.float())

    def has(self, size: int) -> bool:
        return size in self._layouts

    def at(self, size: int) -> UVLayout:
        if size not in self._layouts:
            buffer, weight = uv_lookup_tables(self.uv, self.triangles, size, device=self.device)
            self._layouts[size] = self._layout(buffer.to(self.device), weight.to(self.device))
        return self._layouts[size]

    def _layout(self, buffer: Tensor, weight: Tensor) -> UVLayout:
        return UVLayout(triangle_buffer=buffer, barycentric_weight=weight,
                        vertex_index=uv_vertex_index(self.triangles, buffer))
