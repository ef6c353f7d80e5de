"""Colour transfer in YUV between textures (``scripts/visualize.py:match_color_in_yuv``), in torch.

The official function converts with scikit-image's ``convert_colorspace(x, "rgb", "yuv")``, i.e. a
plain 3x3 matrix product ``x @ M.T`` (with the matrix cast to the input's float dtype, float32 or
float64), and back with the inverse matrix. The same matrices are defined here so that scikit-image
is not needed.

``visualize.py`` calls it as ``match_color_in_yuv(face_color_map * 255, x_sample * 255, front_mask,
sharpen=False) / 255``: the generated UV texture (``dst``) takes the per-channel YUV mean and
(population) standard deviation of the 3DMM albedo render (``src``) over the front-face mask. Its
``sharpen=True`` branch (OpenCV, trap 15) is never taken there and is not reproduced.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

__all__ = ["RGB_FROM_YUV", "YUV_FROM_RGB", "match_color_in_yuv_torch"]

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


def match_color_in_yuv_torch(src: torch.Tensor, dst: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``match_color_in_yuv(src, dst, mask, sharpen=False)`` on batched tensors (the ``visualize.py`` call).

    ``src``, ``dst``: (..., 3, H, W) RGB in 0..255, channels first; ``mask``: (H, W), (..., H, W) or
    (..., C, H, W) (channel 0 used), thresholded at > 0.5 (bool masks as they are). Statistics are
    taken per leading index (per image of a batch). Runs on the tensors' device and dtype (float32
    like the official arrays); the result is clipped to [0, 255] as the official one.
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
    # source's mean instead (the official division gives NaN there).
    scale = torch.where(std_dst > 0, std_src / std_dst.clamp(min=torch.finfo(dst.dtype).tiny), 0.0)
    match_yuv = (dst_yuv - mu_dst) * scale + mu_src
    return torch.einsum("ij,...jhw->...ihw", rgb_from_yuv, match_yuv).clamp(0.0, 255.0)
