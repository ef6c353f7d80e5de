"""Colour transfer in YUV between textures (``scripts/visualize.py:match_color_in_yuv``).

The official function converts with scikit-image's ``convert_colorspace(x, "rgb", "yuv")``, i.e. a
plain 3x3 matrix product ``x @ M.T`` (with the matrix cast to the input's float dtype, float32 or
float64), and back with the inverse matrix. The same matrices are defined here so that scikit-image
is not needed.

``visualize.py`` calls it as ``match_color_in_yuv(face_color_map * 255, x_sample * 255, front_mask,
sharpen=False) / 255``: the generated UV texture (``dst``) takes the per-channel YUV mean and
(population) standard deviation of the 3DMM albedo render (``src``) over the front-face mask.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.linalg
import torch

__all__ = [
    "RGB_FROM_YUV",
    "YUV_FROM_RGB",
    "match_color_in_yuv",
    "match_color_in_yuv_torch",
    "rgb_to_yuv",
    "yuv_to_rgb",
]

# skimage.color.colorconv.yuv_from_rgb and its inverse (scipy.linalg.inv, as scikit-image computes it).
YUV_FROM_RGB = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.14714119, -0.28886916, 0.43601035],
        [0.61497538, -0.51496512, -0.10001026],
    ]
)
RGB_FROM_YUV = scipy.linalg.inv(YUV_FROM_RGB)
YUV_FROM_RGB.setflags(write=False)
RGB_FROM_YUV.setflags(write=False)

# visualize.py's 3x3 sharpen kernel
_SHARPEN_KERNEL = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float32)


def _as_float(x: np.ndarray) -> np.ndarray:
    """Float arrays keep their dtype (float16 goes to float32, as scikit-image does); other dtypes
    become float32 **without** scikit-image's rescaling of integer images to [0, 1]."""
    x = np.asarray(x)
    if x.dtype in (np.float32, np.float64):
        return x
    return x.astype(np.float32)


def rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """RGB → YUV over the last axis, in the input's float dtype (``skimage.color.rgb2yuv``)."""
    rgb = _as_float(rgb)
    return rgb @ YUV_FROM_RGB.T.astype(rgb.dtype)


def yuv_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """YUV → RGB over the last axis, in the input's float dtype (``skimage.color.yuv2rgb``)."""
    yuv = _as_float(yuv)
    return yuv @ RGB_FROM_YUV.T.astype(yuv.dtype)


def match_color_in_yuv(
    src: np.ndarray, dst: np.ndarray, mask: np.ndarray, sharpen: bool = False, w: float = 1.0
) -> np.ndarray:
    """Give ``dst`` the YUV mean/std of ``src`` over ``mask`` (``visualize.py:match_color_in_yuv``).

    ``src``, ``dst``: (H, W, 3) RGB floats in 0..255 (float32 or float64; the computation runs in
    that dtype, as scikit-image's does). ``mask``: (H, W) or (H, W, C); pixels with
    ``mask[..., 0] > 0.5`` are used. Statistics use the population std (``np.std``).

    Without ``sharpen`` (what ``visualize.py`` uses) the result is clipped to [0, 255] in the input
    dtype. With ``sharpen`` the official path is followed: ``cv2.filter2D`` with the 3x3 sharpen
    kernel (reflect-101 border) into float32, then ``cv2.convertScaleAbs(alpha=w)`` → uint8 ``|x|``
    rounded and saturated (negatives are mirrored, not clipped). The official raises there for
    float64 input (trap 15); here the float64 result is filtered as float32 instead.
    Note: the official default is ``sharpen=True``; the default here is the value
    ``visualize.py`` actually passes.
    """
    dst_yuv = rgb_to_yuv(dst)
    src_yuv = rgb_to_yuv(src)
    mask = np.asarray(mask)
    is_valid = (mask[..., 0] if mask.ndim == 3 else mask) > 0.5
    mu_dst = np.mean(dst_yuv[is_valid], axis=0, keepdims=True)
    std_dst = np.std(dst_yuv[is_valid], axis=0, keepdims=True)
    mu_src = np.mean(src_yuv[is_valid], axis=0, keepdims=True)
    std_src = np.std(src_yuv[is_valid], axis=0, keepdims=True)
    match_yuv = (dst_yuv - mu_dst) / std_dst * std_src + mu_src
    match = yuv_to_rgb(match_yuv)
    if sharpen:
        match = cv2.filter2D(match.astype(np.float32, copy=False), cv2.CV_32F, _SHARPEN_KERNEL)
        match = cv2.convertScaleAbs(match, alpha=w)
    return np.clip(match, 0, 255)


def match_color_in_yuv_torch(
    src: torch.Tensor, dst: torch.Tensor, mask: torch.Tensor, clip_max: float = 255.0
) -> torch.Tensor:
    """Batched torch version of ``match_color_in_yuv`` without sharpening (the ``visualize.py`` call).

    ``src``, ``dst``: (..., 3, H, W) RGB, channels first; ``mask``: (H, W), (..., H, W) or
    (..., C, H, W) (channel 0 used), thresholded at > 0.5 (bool masks as they are). Statistics are
    taken per leading index (per image of a batch). Runs on the tensors' device and dtype.

    The transfer is scale-equivariant, so textures in [0, 1] can be used directly with
    ``clip_max=1.0`` instead of multiplying by 255 and dividing afterwards.
    """
    if src.shape[-3] != 3 or dst.shape[-3] != 3:
        raise ValueError(f"expected (..., 3, H, W) RGB tensors, got {tuple(src.shape)} and {tuple(dst.shape)}")
    if mask.dim() == dst.dim():
        mask = mask[..., 0, :, :]
    valid = mask if mask.dtype == torch.bool else mask > 0.5
    valid = valid.to(dst.device).unsqueeze(-3)  # (..., 1, H, W)

    yuv_from_rgb = torch.tensor(YUV_FROM_RGB.tolist(), dtype=dst.dtype, device=dst.device)
    rgb_from_yuv = torch.tensor(RGB_FROM_YUV.tolist(), dtype=dst.dtype, device=dst.device)

    def to_yuv(x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ij,...jhw->...ihw", yuv_from_rgb, x)

    def masked_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weight = valid.to(x.dtype)
        count = weight.sum(dim=(-2, -1), keepdim=True)
        mean = (x * weight).sum(dim=(-2, -1), keepdim=True) / count
        var = (((x - mean) * weight) ** 2).sum(dim=(-2, -1), keepdim=True) / count
        return mean, var.sqrt()

    dst_yuv = to_yuv(dst)
    mu_dst, std_dst = masked_stats(dst_yuv)
    mu_src, std_src = masked_stats(to_yuv(src.to(dtype=dst.dtype, device=dst.device)))
    # A flat channel (a grey texture has U = V = 0 everywhere) would divide 0 by 0: it takes the
    # source's mean instead. The numpy version keeps the official division as it is.
    scale = torch.where(std_dst > 0, std_src / std_dst.clamp(min=torch.finfo(dst.dtype).tiny), 0.0)
    match_yuv = (dst_yuv - mu_dst) * scale + mu_src
    return torch.einsum("ij,...jhw->...ihw", rgb_from_yuv, match_yuv).clamp(0.0, clip_max)
