"""YUV colour transfer: statistics on the mask, dtypes, sharpen path, torch agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uvidm_backend.geometry.color import (
    RGB_FROM_YUV,
    YUV_FROM_RGB,
    match_color_in_yuv,
    match_color_in_yuv_torch,
    rgb_to_yuv,
    yuv_to_rgb,
)


def _textures(seed: int = 0, size: int = 24, dtype=np.float32):
    """Two textures with different colour statistics that stay inside [0, 255] after matching."""
    rng = np.random.default_rng(seed)
    src = (120 + 20 * rng.standard_normal((size, size, 3))).clip(60, 190)
    dst = (90 + 35 * rng.standard_normal((size, size, 3)) + [30, 0, -20]).clip(0, 255)
    mask = np.zeros((size, size, 3))
    mask[4:-4, 3:-5] = 1.0
    return src.astype(dtype), dst.astype(dtype), mask.astype(dtype)


def test_matrices_are_inverse():
    np.testing.assert_allclose(YUV_FROM_RGB @ RGB_FROM_YUV, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(YUV_FROM_RGB[0], [0.299, 0.587, 0.114])  # luma weights
    grey = np.full((2, 2, 3), 100.0)
    np.testing.assert_allclose(rgb_to_yuv(grey)[..., 1:], 0, atol=1e-5)  # no chroma
    np.testing.assert_allclose(yuv_to_rgb(rgb_to_yuv(grey)), grey, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_mean_and_std_on_mask(dtype):
    src, dst, mask = _textures(dtype=dtype)
    out = match_color_in_yuv(src, dst, mask)
    assert out.dtype == dtype and out.shape == dst.shape
    valid = mask[..., 0] > 0.5
    assert 0 < out.min() and out.max() < 255, "test textures must not clip"
    raw = rgb_to_yuv(out.astype(np.float64))[valid]
    ref = rgb_to_yuv(src.astype(np.float64))[valid]
    tol = 1e-3 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(raw.mean(0), ref.mean(0), atol=tol * 10)
    np.testing.assert_allclose(raw.std(0), ref.std(0), rtol=tol)


def test_pixels_outside_the_mask_follow_the_same_affine_map():
    """Pixels outside the mask do not enter the statistics but are transformed too."""
    src, dst, mask = _textures(dtype=np.float64)
    out = match_color_in_yuv(src, dst, mask)
    changed = dst.copy()
    changed[0, 0] = [250.0, 5.0, 128.0]  # outside the mask
    out2 = match_color_in_yuv(src, changed, mask)
    np.testing.assert_array_equal(np.delete(out2.reshape(-1, 3), 0, 0), np.delete(out.reshape(-1, 3), 0, 0))
    assert not np.allclose(out2[0, 0], out[0, 0])


def test_mask_may_be_two_dimensional_or_boolean():
    src, dst, mask = _textures()
    out = match_color_in_yuv(src, dst, mask)
    np.testing.assert_array_equal(match_color_in_yuv(src, dst, mask[..., 0]), out)
    np.testing.assert_array_equal(match_color_in_yuv(src, dst, mask[..., 0] > 0.5), out)


def test_result_is_clipped():
    src, dst, mask = _textures()
    out = match_color_in_yuv(src * 3.0, dst, mask)
    assert out.max() == 255.0 and out.min() >= 0.0


def test_sharpen_path_is_uint8_abs_of_the_filtered_texture():
    src, dst, mask = _textures()
    plain = match_color_in_yuv(src, dst, mask).astype(np.float64)
    sharp = match_color_in_yuv(src, dst, mask, sharpen=True)
    assert sharp.dtype == np.uint8
    assert 0 < plain.min() and plain.max() < 255, "test textures must not clip before sharpening"
    # interior pixel: |5 * centre - 4 neighbours|, rounded and saturated
    y, x = 10, 11
    expected = 5 * plain[y, x] - plain[y - 1, x] - plain[y + 1, x] - plain[y, x - 1] - plain[y, x + 1]
    np.testing.assert_array_equal(sharp[y, x], np.clip(np.rint(np.abs(expected)), 0, 255))
    # float64 textures take the same path (the official raises in OpenCV there)
    sharp64 = match_color_in_yuv(src.astype(np.float64), dst.astype(np.float64), mask, sharpen=True)
    assert sharp64.dtype == np.uint8
    assert np.abs(sharp64.astype(int) - sharp).max() <= 1


def _to_torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_torch_agrees_with_numpy(dtype):
    src, dst, mask = _textures(seed=3, dtype=dtype)
    expected = match_color_in_yuv(src, dst, mask)
    out = match_color_in_yuv_torch(_to_torch(src), _to_torch(dst), _to_torch(mask))
    assert out.dtype == _to_torch(dst).dtype and out.shape == (3, *dst.shape[:2])
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    err = (out.permute(1, 2, 0).double() - torch.from_numpy(expected).double()).abs().max().item()
    assert err <= rtol * 255, f"max |torch - numpy| = {err:.3g}"


def test_torch_batches_use_per_image_statistics_and_clip_max():
    pairs = [_textures(seed=s) for s in (4, 5)]
    src = torch.stack([_to_torch(p[0]) for p in pairs])
    dst = torch.stack([_to_torch(p[1]) for p in pairs])
    mask = torch.from_numpy(pairs[0][2][..., 0])  # (H, W), shared
    out = match_color_in_yuv_torch(src, dst, mask)
    for i, (s, d, m) in enumerate(pairs):
        expected = torch.from_numpy(match_color_in_yuv(s, d, m))
        assert (out[i].permute(1, 2, 0) - expected).abs().max().item() < 1e-3
    # scale equivariance: textures in [0, 1] with clip_max=1
    out01 = match_color_in_yuv_torch(src / 255, dst / 255, mask[None, None] > 0.5, clip_max=1.0)
    assert (out01 * 255 - out).abs().max().item() < 1e-3


@pytest.mark.gpu
def test_torch_on_cuda_agrees_with_cpu():
    src, dst, mask = _textures(seed=6)
    cpu = match_color_in_yuv_torch(_to_torch(src), _to_torch(dst), _to_torch(mask))
    gpu = match_color_in_yuv_torch(_to_torch(src).cuda(), _to_torch(dst).cuda(), _to_torch(mask).cuda())
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max().item() < 1e-3
