"""YUV colour transfer against the official formula computed with scikit-image: statistics, dtypes, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from geometry.official_color import official_match_color_in_yuv as official
from skimage.color.colorconv import rgb_from_yuv, yuv_from_rgb

from uvidm_backend.geometry.color import RGB_FROM_YUV, YUV_FROM_RGB, match_color_in_yuv_torch


def _textures(seed: int = 0, size: int = 24, dtype=np.float32):
    """Two textures with different colour statistics (0..255)."""
    rng = np.random.default_rng(seed)
    src = (120 + 20 * rng.standard_normal((size, size, 3))).clip(60, 190)
    dst = (90 + 35 * rng.standard_normal((size, size, 3)) + [30, 0, -20]).clip(0, 255)
    mask = np.zeros((size, size, 3))
    mask[4:-4, 3:-5] = 1.0
    return src.astype(dtype), dst.astype(dtype), mask.astype(dtype)


def _to_torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)


def test_matrices_are_scikit_images():
    np.testing.assert_array_equal(YUV_FROM_RGB, yuv_from_rgb)
    np.testing.assert_allclose(RGB_FROM_YUV, rgb_from_yuv, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_agrees_with_the_official_formula(dtype, seed):
    src, dst, mask = _textures(seed=seed, dtype=dtype)
    src[0, :4] = [300, -20, 255]  # outside the mask and off-range: transformed and clipped like the rest
    expected = official(src, dst, mask)
    out = match_color_in_yuv_torch(_to_torch(src), _to_torch(dst), _to_torch(mask))
    assert out.dtype == _to_torch(dst).dtype and out.shape == (3, *dst.shape[:2])
    atol = 2e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, rtol=0, atol=atol)


def test_mask_may_be_two_dimensional_or_boolean():
    src, dst, mask = _textures()
    s, d = _to_torch(src), _to_torch(dst)
    out = match_color_in_yuv_torch(s, d, _to_torch(mask))
    torch.testing.assert_close(match_color_in_yuv_torch(s, d, torch.from_numpy(mask[..., 0])), out, rtol=0, atol=0)
    torch.testing.assert_close(match_color_in_yuv_torch(s, d, torch.from_numpy(mask[..., 0] > 0.5)), out, rtol=0,
                               atol=0)


def test_result_is_clipped_to_0_255():
    src, dst, mask = _textures()
    out = match_color_in_yuv_torch(_to_torch(src * 3.0), _to_torch(dst), _to_torch(mask))
    assert out.max() == 255.0 and out.min() >= 0.0


def test_batches_use_per_image_statistics():
    pairs = [_textures(seed=s) for s in (4, 5)]
    src = torch.stack([_to_torch(p[0]) for p in pairs])
    dst = torch.stack([_to_torch(p[1]) for p in pairs])
    mask = torch.from_numpy(pairs[0][2][..., 0])  # (H, W), shared
    out = match_color_in_yuv_torch(src, dst, mask)
    for i, (s, d, m) in enumerate(pairs):
        np.testing.assert_allclose(out[i].permute(1, 2, 0).numpy(), official(s, d, m), rtol=0, atol=2e-4)


@pytest.mark.gpu
def test_on_cuda_agrees_with_cpu():
    src, dst, mask = _textures(seed=6)
    cpu = match_color_in_yuv_torch(_to_torch(src), _to_torch(dst), _to_torch(mask))
    gpu = match_color_in_yuv_torch(_to_torch(src).cuda(), _to_torch(dst).cuda(), _to_torch(mask).cuda())
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max().item() < 1e-3
