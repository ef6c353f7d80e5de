"""Official preprocessing (case "preprocess"): five points, POS, crop, dataset outputs and YUV colour
transfer, reproduced through the public API.

Every ``out_*`` array of the case is checked; what each one is comes from its name and the README.
"""

from __future__ import annotations

import numpy as np
import pytest
import refdata
import torch

from uvidm_backend.geometry.align import (
    align_face,
    alignment_params,
    extract_lm5_from_lm68,
    pos,
    to_minus_one_one,
)
from uvidm_backend.geometry.color import match_color_in_yuv_torch

pytestmark = pytest.mark.reference

CASE = "preprocess"
RTOL = 1e-5
# The sharpen branch of match_color_in_yuv (OpenCV, trap 15): visualize.py never takes it, nor does the product.
# visualize.py's paste-back of a crop render (`trans_back_ori_image`): the product draws its preview at the
# photo's own resolution instead (pipeline/preview.py).
NOT_REPRODUCED = {"out_mc_f32_sharpen", "out_trans_back_ori_image"}


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    return refdata.case_arrays(CASE)


def _check(actual, expected: np.ndarray, key: str) -> None:
    actual = np.asarray(actual)
    if expected.dtype.kind in "iub":
        assert actual.dtype == expected.dtype, f"{key}: dtype {actual.dtype} != {expected.dtype}"
        np.testing.assert_array_equal(actual, expected, err_msg=key)
    else:
        refdata.assert_close(actual.reshape(expected.shape), expected, rtol=RTOL, what=key)


def _photo_size(arrays) -> tuple[int, int]:
    h0, w0 = arrays["in_image_uint8"].shape[:2]
    meta = refdata.case_meta(CASE)
    if "image_size_WH" in meta:
        assert tuple(meta["image_size_WH"]) == (w0, h0)
    return w0, h0


def _official_outputs(arrays) -> dict[str, np.ndarray]:
    """What the public API computes for the calls of the README, keyed like the archive."""
    lm68, lm3d, image = arrays["in_lm68"], arrays["in_lm3d"], arrays["in_image_uint8"]
    lm5_2d = extract_lm5_from_lm68(lm68)
    lm5_3d = extract_lm5_from_lm68(lm3d)
    t, s = pos(lm5_2d, lm5_3d)
    alignment = align_face(image, lm5_2d, lm5_3d)
    # DDFAInFerPaths.preprocess_image: the five points of the float32 68, the crop and the photo in [-1, 1].
    dataset_alignment = align_face(image, extract_lm5_from_lm68(lm68.astype(np.float32)), lm5_3d)
    out = {
        "out_lm5_2d": lm5_2d,
        "out_lm5_3d": lm5_3d,
        "out_pos_t": t,
        "out_pos_s": np.float64(s),
        "out_trans_params": alignment.trans_params,
        "out_crop_uint8": alignment.crop,
        "out_lm_crop": alignment.to_crop(lm68),
        "out_ds_image": dataset_alignment.model_input(),
        "out_ds_image_ori": to_minus_one_one(np.asarray(image)),
        "out_ds_trans_params": np.array(dataset_alignment.trans_params),
    }
    for key in arrays:
        if key.startswith("out_mc_") and key not in NOT_REPRODUCED:
            dtype = np.float64 if "f64" in key else np.float32
            src, dst, mask = (torch.from_numpy(arrays[f"in_mc_{n}"].astype(dtype)).permute(2, 0, 1)
                              for n in ("src", "dst", "mask"))
            out[key] = match_color_in_yuv_torch(src, dst, mask).permute(1, 2, 0).numpy()
    return out


@pytest.fixture(scope="module")
def outputs(arrays) -> dict[str, np.ndarray]:
    return _official_outputs(arrays)


def test_every_output_is_covered(arrays, outputs):
    missing = sorted(k for k in arrays if k.startswith("out_") and k not in outputs and k not in NOT_REPRODUCED)
    assert not missing, f"outputs without a reproduction: {missing}"


@pytest.mark.parametrize(
    "prefix",
    ["out_lm5_", "out_pos_", "out_trans_params", "out_crop_", "out_lm_crop", "out_ds_", "out_mc_"],
)
def test_outputs(arrays, outputs, prefix):
    keys = [k for k in arrays if k.startswith(prefix) and k not in NOT_REPRODUCED]
    if not keys:
        pytest.skip(f"no {prefix}* outputs in this reference set")
    for key in keys:
        _check(outputs[key], arrays[key], key)


def test_trans_params_layout(arrays, outputs):
    """[w0, h0, 102 / s, t0, t1, 224] with w0, h0 the photo size (PIL order)."""
    w0, h0 = _photo_size(arrays)
    params = alignment_params(outputs["out_lm5_2d"], outputs["out_lm5_3d"], (w0, h0))
    np.testing.assert_array_equal(params, outputs["out_trans_params"])
    assert params[0] == w0 and params[1] == h0
    assert params[2] == pytest.approx(102.0 / float(outputs["out_pos_s"]))


def test_crop_landmarks_of_alignment(arrays, outputs):
    """Alignment.landmarks are the five points mapped like the 68 of out_lm_crop."""
    alignment = align_face(arrays["in_image_uint8"], outputs["out_lm5_2d"], outputs["out_lm5_3d"])
    expected_lm5 = extract_lm5_from_lm68(arrays["out_lm_crop"])
    refdata.assert_close(alignment.landmarks, expected_lm5, rtol=RTOL, what="lm5 in crop")
