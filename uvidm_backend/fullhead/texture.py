"""Textures in the ICT UV layout: per-vertex values baked into texels, our albedo carried over.

`UVBake` rasterises one part's UV layout (which triangle and barycentric weights cover each texel, and for
texels outside the layout the nearest covered one, so that filtering never reads the background). Skin:
each texel's point on the ICT surface has a point on the BFM surface (`correspondence`), whose BFM UV reads
our albedo; the albedo's share falls to 0 away from the BFM face, where the person's skin tone (the median
albedo of the matched face) takes over. Neither a texel's BFM UV nor its share depends on the person: a
`SkinLayout` keeps them per texture size, and a request is one bilinear read of the albedo on its device.
Eyes get a procedural sclera and iris (pupil, radial fibres, limbal ring) from each texel's position relative
to the eye's axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import torch

from uvidm_backend.geometry.uv_tables import uv_lookup_tables
from uvidm_backend.pipeline.texture import to_uint8_image

PUPIL_DEG, IRIS_DEG = 12.0, 33.0  # angular radii seen from the eyeball's centre (6 mm iris on a 12 mm eye)
SCLERA_COLOUR = np.array([0.90, 0.87, 0.84])
IRIS_COLOUR = np.array([0.36, 0.24, 0.14])  # hazel brown, linear-ish sRGB in 0..1
PUPIL_COLOUR = np.array([0.02, 0.02, 0.02])
LIMBUS_COLOUR = np.array([0.10, 0.07, 0.05])


@dataclass(frozen=True, eq=False)
class UVBake:
    """Texel -> (three split vertices, barycentric weights) of one UV layout at one size."""

    corners: np.ndarray  # (H, W, 3) int64 split-vertex indices (of the nearest covered texel outside the layout)
    weights: np.ndarray  # (H, W, 3) float32
    covered: np.ndarray  # (H, W) bool, inside the layout

    @classmethod
    def build(cls, uv: np.ndarray, triangles: np.ndarray, size: tuple[int, int],
              device: torch.device | str | None = None) -> UVBake:
        """Rasterised on `device` (default: the CPU); the tables come back to the CPU."""
        buffer, weight = uv_lookup_tables(torch.from_numpy(np.ascontiguousarray(uv, np.float64)),
                                          torch.from_numpy(np.array(triangles, np.int64)), size,
                                          device=device)
        buffer, weight = buffer.cpu(), weight.cpu()
        covered = weight.sum(-1).numpy() > 0
        corners = np.asarray(triangles, np.int64)[buffer.numpy()]
        weights = weight.numpy().astype(np.float32)
        if covered.any() and not covered.all():
            _, (rows, cols) = scipy.ndimage.distance_transform_edt(~covered, return_indices=True)
            corners, weights = corners[rows, cols], weights[rows, cols]
        return cls(corners, weights, covered)

    def bake(self, values: np.ndarray) -> np.ndarray:
        """(M, C) per split vertex -> (H, W, C) float32."""
        values = np.asarray(values, np.float32)
        return np.einsum("hwk,hwkc->hwc", self.weights, values[self.corners])


@dataclass(frozen=True, eq=False)
class SkinLayout:
    """What each texel of the skin texture reads: a point of our albedo and the albedo's share there."""

    grid: np.ndarray  # (H, W, 2) float32 `uv_grid` of the texel's BFM UV
    share: np.ndarray  # (H, W) float32 in [0, 1]; the skin tone's share is 1 - share

    @classmethod
    def build(cls, bake: UVBake, bfm_uv: np.ndarray, weight: np.ndarray) -> SkinLayout:
        """From the bake of the skin and its split vertices' BFM UVs (M, 2) and albedo weights (M,)."""
        values = bake.bake(np.column_stack([bfm_uv, weight]))
        return cls(uv_grid(values[..., :2]), np.clip(values[..., 2], 0.0, 1.0))


def uv_grid(uv: np.ndarray) -> np.ndarray:
    """UVs (..., 2) (v up, texel centres at i / (S - 1)) as `grid_sample` coordinates with align_corners=True."""
    uv = np.asarray(uv, np.float32)
    return np.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], axis=-1)


def sample_texture(texture: torch.Tensor, uv: np.ndarray) -> np.ndarray:
    """Bilinear reads of a (1, 3, S, S) texture in [0, 1] at UVs (..., 2) (v up, texel centres at i / (S - 1))."""
    shape = uv.shape[:-1]
    grid = torch.from_numpy(uv_grid(uv).reshape(1, -1, 1, 2)).to(texture.device, texture.dtype)
    sampled = torch.nn.functional.grid_sample(texture, grid, mode="bilinear", align_corners=True)
    return sampled[0, :, :, 0].T.reshape(*shape, 3).cpu().float().numpy()


def skin_tone(albedo: torch.Tensor, bfm_uv: np.ndarray) -> np.ndarray:
    """The median colour of the albedo at `bfm_uv` (n, 2): the person's skin, robust to brows and lips."""
    return np.median(sample_texture(albedo, bfm_uv), axis=0)


def skin_texture(albedo: torch.Tensor, grid: torch.Tensor, share: torch.Tensor, tone: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: our albedo (1, 3, S, S) where the BFM face is, the skin tone (3,) elsewhere, blended per
    vertex. `grid` (H, W, 2) and `share` (H, W): a `SkinLayout`'s, on the albedo's device and in its dtype."""
    colour = torch.nn.functional.grid_sample(albedo, grid[None], mode="bilinear", align_corners=True)
    share = share[None, None]
    tone = torch.as_tensor(np.asarray(tone, np.float32), dtype=albedo.dtype).to(albedo.device)
    return to_uint8_image(share * colour + (1.0 - share) * tone[None, :, None, None])


def eye_axis(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centre, unit axis) of an eyeball's vertices: the axis points from the centre to the cornea's apex (+z)."""
    centre = (positions.min(axis=0) + positions.max(axis=0)) / 2
    centre[2] = np.median(positions[:, 2])
    apex = positions[np.argmax(positions[:, 2])]
    axis = apex - centre
    return centre, axis / np.linalg.norm(axis)


def eye_colours(points: np.ndarray, centre: np.ndarray, axis: np.ndarray, seed: int = 0) -> np.ndarray:
    """(..., 3) colours in [0, 1] of points on an eyeball: pupil, iris with radial fibres, limbal ring, sclera.

    By the angle between the eye's axis and the point as seen from the eye's centre, so the same
    function paints the outer (sclera) and the inner (iris) sphere of the ICT eye consistently.
    """
    offsets = points - centre
    along = offsets @ axis
    side = offsets - along[..., None] * axis
    angle = np.degrees(np.arctan2(np.linalg.norm(side, axis=-1), along))
    up = np.array([0.0, 1.0, 0.0]) - axis[1] * axis
    right = np.cross(axis, up)
    azimuth = np.arctan2(side @ right, side @ up)
    phase = np.random.default_rng(seed).uniform(0.0, 2 * np.pi)
    fibres = 0.8 + 0.2 * np.cos(azimuth * 41.0 + phase) * np.cos(azimuth * 13.0)
    iris = IRIS_COLOUR * fibres[..., None] * (1.2 - 0.4 * (angle / IRIS_DEG))[..., None]
    colour = np.where((angle < PUPIL_DEG)[..., None], PUPIL_COLOUR, iris)
    limbus = np.clip((angle - 0.85 * IRIS_DEG) / (0.15 * IRIS_DEG), 0.0, 1.0)[..., None]
    colour = colour * (1 - limbus) + LIMBUS_COLOUR * limbus
    sclera = SCLERA_COLOUR * (1.0 - 0.1 * np.clip((angle - IRIS_DEG) / 90.0, 0.0, 1.0))[..., None]
    colour = np.where((angle > IRIS_DEG)[..., None], sclera, colour)
    return np.clip(colour, 0.0, 1.0).astype(np.float32)
