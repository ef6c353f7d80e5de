"""visualize.py's `match_color_in_yuv(src, dst, mask, sharpen=False)`, written out with scikit-image, for tests."""

from __future__ import annotations

import numpy as np
import skimage.color


def official_match_color_in_yuv(src_tex: np.ndarray, dst_tex: np.ndarray, mask: np.ndarray) -> np.ndarray:
    dst_tex_yuv = skimage.color.convert_colorspace(dst_tex, "rgb", "yuv")
    src_tex_yuv = skimage.color.convert_colorspace(src_tex, "rgb", "yuv")
    is_valid = mask[:, :, 0] > 0.5
    mu_dst = np.mean(dst_tex_yuv[is_valid], axis=0, keepdims=True)
    std_dst = np.std(dst_tex_yuv[is_valid], axis=0, keepdims=True)
    mu_src = np.mean(src_tex_yuv[is_valid], axis=0, keepdims=True)
    std_src = np.std(src_tex_yuv[is_valid], axis=0, keepdims=True)
    match_tex_yuv = (dst_tex_yuv - mu_dst) / std_dst * std_src + mu_src
    return np.clip(skimage.color.convert_colorspace(match_tex_yuv, "yuv", "rgb"), 0, 255)
