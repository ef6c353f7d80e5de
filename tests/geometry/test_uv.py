"""Known answers of the UV-space functions (process_uv, lookups, colour rendering, photo remapping)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uvidm_backend.geometry import uv


def test_process_uv_does_not_mutate_and_flips_v():
    coords = np.array([[0.0, 0.0], [1.0, 1.0], [0.5, 0.25]])
    before = coords.copy()
    pixels = uv.process_uv(coords, 9, 5)
    np.testing.assert_array_equal(coords, before)
    np.testing.assert_allclose(pixels, [[0, 8, 0], [4, 0, 0], [2, 6, 0]])
    assert pixels.dtype == np.float64
    in_float32 = uv.process_uv(coords.astype(np.float32))  # the arithmetic stays in float32, as officially
    assert in_float32.dtype == np.float64
    np.testing.assert_array_equal(in_float32[:, 0], (coords[:, 0].astype(np.float32) * np.float32(255)))


def test_render_vertex_colors_uv():
    colors = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]]])
    triangles = torch.tensor([[0, 1, 2], [1, 3, 2]])
    buffer = torch.tensor([[0, 1], [1, 0]])
    weight = torch.tensor([[[1.0, 0, 0], [0.5, 0.5, 0]], [[0, 0, 0], [0.2, 0.3, 0.5]]])
    image = uv.render_vertex_colors_uv(colors, triangles, buffer, weight)
    assert image.shape == (1, 3, 2, 2)
    torch.testing.assert_close(image[0, :, 0, 0], torch.tensor([1.0, 0, 0]))
    torch.testing.assert_close(image[0, :, 0, 1], torch.tensor([0.5, 1.0, 0.5]))  # 0.5 * v1 + 0.5 * v3
    torch.testing.assert_close(image[0, :, 1, 0], torch.zeros(3))  # outside the mesh
    torch.testing.assert_close(image[0, :, 1, 1], torch.tensor([0.2, 0.3, 0.5]))


def _remap_setup():
    """One triangle covering a 40x50 photo with a horizontal ramp, seen in a 4x4 UV map."""
    height, width = 40, 50
    xs = torch.arange(width, dtype=torch.float32).expand(height, width)
    image = torch.stack([xs / width, xs * 0 + 0.5, xs * 0 + 1.0])[None]
    projXY = torch.tensor([[[10.0, 10.0], [40.0, 10.0], [10.0, 30.0]]])
    normals = torch.tensor([[[0.0, 0.0, -1.0]] * 3])
    seg = torch.ones(1, height, width)
    index = torch.tensor([0, 1, 2]).expand(4, 4, 3)
    weight = torch.rand(4, 4, 3, generator=torch.Generator().manual_seed(0))
    weight = weight / weight.sum(-1, keepdim=True)
    return image, projXY, normals, seg, index, weight


def test_remap_samples_with_the_official_half_pixel_offset():
    image, projXY, normals, seg, index, weight = _remap_setup()
    texture, mask = uv.remap_texture_from_image(image, projXY, normals, seg, index, weight)
    assert texture.shape == (1, 3, 4, 4) and mask.shape == (1, 1, 4, 4)
    torch.testing.assert_close(mask, torch.ones(1, 1, 4, 4))
    x = (weight * projXY[0, :, 0]).sum(-1)
    # grid x / (W // 2) - 1 with align_corners=False samples the ramp at x - 0.5 (trap 3)
    torch.testing.assert_close(texture[0, 0], (x - 0.5) / image.shape[-1])
    torch.testing.assert_close(texture[0, 1:], torch.tensor([0.5, 1.0])[:, None, None].expand(2, 4, 4))


def test_remap_masks_back_faces_occlusion_and_segmentation():
    image, projXY, normals, seg, index, weight = _remap_setup()
    away = normals.clone()
    away[..., 2] = 1.0
    texture, mask = uv.remap_texture_from_image(image, projXY, away, seg, index, weight)
    assert mask.sum() == 0 and texture.abs().sum() == 0
    hidden = torch.tensor([[False, False, False]])
    _, mask = uv.remap_texture_from_image(image, projXY, normals, seg, index, weight, vertex_visibility=hidden)
    assert mask.sum() == 0
    _, mask = uv.remap_texture_from_image(image, projXY, normals, torch.zeros_like(seg), index, weight)
    assert mask.sum() == 0
    # one vertex hidden: a pixel stays visible only where the two others hold more than half the weight
    one_hidden = torch.tensor([[True, True, False]])
    _, mask = uv.remap_texture_from_image(image, projXY, normals, seg, index, weight, vertex_visibility=one_hidden)
    torch.testing.assert_close(mask[0, 0], (weight[..., 0] + weight[..., 1] > 0.5).float())


# -- registration of the 256 -> N resize with the UV tables -----------------------------------------

BLOB_UVS = [(0.5, 0.5), (0.13, 0.81), (0.87, 0.22), (0.31, 0.37), (0.71, 0.64), (0.06, 0.08), (0.95, 0.93)]
BLOB_SIGMA_UV = 0.012


def _blob_map(size: int) -> np.ndarray:
    """Gaussian blobs at BLOB_UVS, evaluated at each texel's UV: texel (r, c) of an S-texel map holds
    u = c / (S - 1), v = 1 - r / (S - 1) (the official `process_uv` convention of the UV tables)."""
    u = np.arange(size) / (size - 1)
    v = 1 - np.arange(size) / (size - 1)
    image = np.zeros((size, size))
    for bu, bv in BLOB_UVS:
        image += np.exp(-((u[None, :] - bu) ** 2 + (v[:, None] - bv) ** 2) / (2 * BLOB_SIGMA_UV**2))
    return image


def _misregistration(image: np.ndarray) -> float:
    """Largest distance (texels) between a blob's intensity centroid and where the UV tables put its centre."""
    size = image.shape[0]
    worst = 0.0
    for bu, bv in BLOB_UVS:
        x, y = bu * (size - 1), (1 - bv) * (size - 1)
        half = int(4 * BLOB_SIGMA_UV * (size - 1))
        r0, r1 = max(0, round(y) - half), min(size, round(y) + half + 1)
        c0, c1 = max(0, round(x) - half), min(size, round(x) + half + 1)
        window = np.clip(image[r0:r1, c0:c1], 0, None)
        rows, cols = np.mgrid[r0:r1, c0:c1]
        cy, cx = (window * rows).sum() / window.sum(), (window * cols).sum() / window.sum()
        worst = max(worst, float(np.hypot(cx - x, cy - y)))
    return worst


@pytest.mark.parametrize("size", [1024, 2048])
def test_resize_is_registered_with_the_uv_tables_to_a_quarter_texel(size):
    model = torch.from_numpy(_blob_map(256))[None, None]
    resized = uv.resize_uv_map(model, size)[0, 0].numpy()
    assert resized.shape == (size, size)
    # the measurement itself: a blob map made directly at N sits where the tables say (cut-off blobs at
    # the borders only lose a little symmetry)
    assert _misregistration(_blob_map(size)) < 0.05
    assert _misregistration(resized) < 0.25
    # and it can tell: the half-texel convention of a plain resize is off by more than a texel
    shifted = torch.nn.functional.interpolate(model, (size, size), mode="bicubic", align_corners=False)
    assert _misregistration(shifted[0, 0].numpy()) > 1.0
