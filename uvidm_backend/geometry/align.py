"""Five-point face alignment of the official UV-IDM preprocessing (``ldm/data/preprocess_func.py``,
``ldm/data/base.py:DDFAInFerPaths.preprocess_image``).

Coordinate conventions (trap 7 of the reference README): the official code never flips landmarks,
yet ``resize_crop_img`` and ``trans_projXY_back_to_ori_coord`` assume **y-up** landmarks,
``y_up = H - 1 - row``. Every function here says which convention it takes:

* ``*_yup`` arguments: x to the right, y up, in pixels of the original photo (the official input);
* ``*_ydown`` / insightface arguments: x to the right, y down (rows), as detectors return them;
* crop landmarks returned by the alignment are y-up in the 224 crop, as Deep3DFaceRecon's.

Five-point order ("official order"): image-left eye, image-right eye, nose tip, image-left mouth
corner, image-right mouth corner — the order ``extract_lm5_from_lm68`` produces after its reorder.
It coincides with the insightface / ArcFace ``kps`` order; only the y axis differs.

``trans_params`` = ``[w0, h0, s, t0, t1, target_size]`` (float64, as the dataset returns it): photo
size, the resize factor ``rescale_factor / pos_scale`` and the POS translation (y-up). Note that
``visualize.py`` casts it to float32 before the encoder; integer truncations
such as ``int(w0 * s)`` are evaluated in the dtype of the array that is passed in (trap 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from uvidm_backend.geometry.resize_window import resized_window

__all__ = [
    "LM68_TO_LM5_IDS",
    "Alignment",
    "align_face",
    "alignment_params",
    "crop_box",
    "extract_lm5_from_lm68",
    "landmarks_to_crop",
    "lm5_from_insightface",
    "lm5_from_lm68",
    "pos",
    "resize_crop_img",
    "to_minus_one_one",
    "ydown_to_yup",
]

# 1-based iBUG-68 ids used by the official extract_lm5_from_lm68: nose tip, left eye corners,
# right eye corners, mouth corners (eye centre = mean of its two corners, not of six points).
LM68_TO_LM5_IDS = (31, 37, 40, 43, 46, 49, 55)

TARGET_SIZE = 224
RESCALE_FACTOR = 102.0


def extract_lm5_from_lm68(lm68: np.ndarray) -> np.ndarray:
    """Five points in the official order from 68 iBUG points (``preprocess_func.extract_lm5_from_lm68``).

    Works on any trailing dimension (2D landmarks or the (68, 3) ``similarity_Lm3D_all.mat['lm']``);
    keeps the dtype and the y convention of its input.
    """
    lm68 = np.asarray(lm68)
    idx = np.asarray(LM68_TO_LM5_IDS) - 1
    lm5 = np.stack(
        [
            lm68[idx[0]],
            np.mean(lm68[idx[[1, 2]]], 0),
            np.mean(lm68[idx[[3, 4]]], 0),
            lm68[idx[5]],
            lm68[idx[6]],
        ],
        axis=0,
    )
    return lm5[[1, 2, 0, 3, 4]]


def ydown_to_yup(points: np.ndarray, image_height: int) -> np.ndarray:
    """Row-based (y-down) pixel points to the y-up convention of the official code, ``y = H - 1 - row``.

    The map is its own inverse, so it also converts y-up points back to rows.
    """
    points = np.array(points, copy=True)
    points[..., 1] = (image_height - 1) - points[..., 1]
    return points


def lm5_from_insightface(kps: np.ndarray, image_height: int) -> np.ndarray:
    """insightface / ArcFace ``kps`` (5, 2), y-down pixels → official five points, y-up, float32.

    The ArcFace order (image-left eye, image-right eye, nose, image-left and image-right mouth corner)
    is already the official order, so only the y axis is converted. float32 like the official
    ``lm68_2d.astype(np.float32)``.
    """
    kps = np.asarray(kps, dtype=np.float64)
    if kps.shape != (5, 2):
        raise ValueError(f"expected (5, 2) insightface keypoints, got {kps.shape}")
    return ydown_to_yup(kps, image_height).astype(np.float32)


def lm5_from_lm68(lm68_ydown: np.ndarray, image_height: int) -> np.ndarray:
    """68 iBUG points (68, 2), y-down pixels → official five points, y-up, float32.

    In the official order of operations (``DDFAInFerPaths``: the detected 68 points are turned y-up,
    cast to float32, then ``extract_lm5_from_lm68``), so the eye centres are float32 means.
    """
    lm68 = np.asarray(lm68_ydown, dtype=np.float64)
    if lm68.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {lm68.shape}")
    return extract_lm5_from_lm68(ydown_to_yup(lm68, image_height).astype(np.float32))


def pos(lm2d: np.ndarray, lm3d: np.ndarray) -> tuple[np.ndarray, float]:
    """Weak-perspective fit of 2D points to 3D points by least squares (``preprocess_func.POS``).

    Returns ``(t, s)``: translation (2,) float64 (the official returns (2, 1)) and scale.
    ``numpy.linalg.lstsq`` is called without ``rcond`` as in the official code.
    """
    lm2d = np.asarray(lm2d)
    lm3d = np.asarray(lm3d)
    npts = lm2d.shape[0]
    a = np.zeros([2 * npts, 8])
    a[0 : 2 * npts - 1 : 2, 0:3] = lm3d
    a[0 : 2 * npts - 1 : 2, 3] = 1
    a[1 : 2 * npts : 2, 4:7] = lm3d
    a[1 : 2 * npts : 2, 7] = 1
    b = np.reshape(lm2d, [2 * npts, 1])
    k, _, _, _ = np.linalg.lstsq(a, b)
    r1, r2 = k[0:3], k[4:7]
    s = (np.linalg.norm(r1) + np.linalg.norm(r2)) / 2
    t = np.array([k[3, 0], k[7, 0]])
    return t, float(s)


def alignment_params(
    lm5_yup: np.ndarray,
    lm3d_5: np.ndarray,
    image_size: tuple[int, int],
    target_size: int = TARGET_SIZE,
    rescale_factor: float = RESCALE_FACTOR,
) -> np.ndarray:
    """``trans_params = [w0, h0, rescale_factor / s, t0, t1, target_size]`` (float64), as
    ``DDFAInFerPaths.preprocess_image`` builds it (without its ragged-array problem, trap 6).

    ``image_size`` is ``(w0, h0)`` (PIL order); ``lm5_yup`` are the five y-up points in the official
    order, ``lm3d_5`` the five 3D reference points (``extract_lm5_from_lm68`` of
    ``similarity_Lm3D_all.mat['lm']``).
    """
    w0, h0 = image_size
    t, s = pos(lm5_yup, lm3d_5)
    return np.array([w0, h0, rescale_factor / s, t[0], t[1], target_size], dtype=np.float64)


def crop_box(trans_params: np.ndarray) -> tuple[int, int, int, int]:
    """``(w, h, left, up)``: resized photo size and crop corner, as ``resize_crop_img`` computes them.

    Evaluated with the scalars of ``trans_params`` in its own dtype (float32 parameters truncate as
    in ``visualize.py``); ``int`` truncates towards zero, also for negative corners.
    """
    w0, h0, s, t0, t1, target_size = np.asarray(trans_params)
    w, h = int(w0 * s), int(h0 * s)
    left = int(w / 2 - target_size / 2 + float((t0 - w0 / 2) * s))
    up = int(h / 2 - target_size / 2 + float((h0 / 2 - t1) * s))
    return w, h, left, up


def landmarks_to_crop(points_yup: np.ndarray, trans_params: np.ndarray) -> np.ndarray:
    """Photo points (y-up) → crop points (y-up in the crop), the landmark part of ``resize_crop_img``."""
    w0, h0, s, t0, t1, target_size = np.asarray(trans_params)
    w, h = int(w0 * s), int(h0 * s)
    points_yup = np.asarray(points_yup)
    lm = np.stack([points_yup[:, 0] - t0 + w0 / 2, points_yup[:, 1] - t1 + h0 / 2], axis=1) * s
    return lm - np.reshape(np.array([(w / 2 - target_size / 2), (h / 2 - target_size / 2)]), [1, 2])


def _as_rgb(image: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
    """A PIL image in mode RGB, or an (H, W, 3) uint8 array as it is (no copy of the photo)."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {array.shape} {array.dtype}")
    return array


def _image_size(image: Image.Image | np.ndarray) -> tuple[int, int]:
    """``(w0, h0)``, PIL order."""
    return image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])


def resize_crop_img(
    image: Image.Image | np.ndarray, lm_yup: np.ndarray, trans_params: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``preprocess_func.resize_crop_img``: PIL bicubic resize to ``(int(w0*s), int(h0*s))``, then a
    ``target_size`` crop at ``(left, up)`` (zero padding outside the photo).

    Only the crop is resampled (`resized_window`), bit-identical to resizing the whole photo.
    Returns the crop as an (S, S, 3) uint8 array and ``lm_yup`` mapped into the crop (y-up).
    """
    image = _as_rgb(image)
    params = np.asarray(trans_params)
    size = _image_size(image)
    if params[0] != size[0] or params[1] != size[1]:
        raise ValueError(f"trans_params are for a {params[:2]} image, got {size}")
    target_size = int(params[5])
    w, h, left, up = crop_box(params)
    crop = resized_window(image, (w, h), (left, up, left + target_size, up + target_size))
    return crop, landmarks_to_crop(lm_yup, params)


@dataclass(frozen=True, eq=False)
class Alignment:
    """A face aligned the official way: the crop fed to the networks and how it maps to the photo.

    ``crop`` (S, S, 3) uint8 RGB; ``landmarks`` the five points in the crop (y-up in the crop, the
    official ``resize_crop_img`` output); ``trans_params`` (6,) float64
    ``[w0, h0, s, t0, t1, S]``. Treat the arrays as read-only (they stay writable so that
    ``torch.from_numpy`` accepts them).
    """

    crop: np.ndarray
    landmarks: np.ndarray
    trans_params: np.ndarray

    @property
    def image_size(self) -> tuple[int, int]:
        """``(w0, h0)`` of the photo."""
        return int(self.trans_params[0]), int(self.trans_params[1])

    @property
    def scale(self) -> float:
        """Resize factor photo → crop resolution."""
        return float(self.trans_params[2])

    def to_crop(self, points_yup: np.ndarray) -> np.ndarray:
        """Other photo points (y-up, e.g. all 68 landmarks) in crop coordinates (y-up)."""
        return landmarks_to_crop(points_yup, self.trans_params)

    def model_input(self) -> np.ndarray:
        """The crop in [-1, 1] float32 (H, W, 3), as the official dataset returns it."""
        return to_minus_one_one(self.crop)


def align_face(
    image: Image.Image | np.ndarray,
    lm5_yup: np.ndarray,
    lm3d_5: np.ndarray,
    target_size: int = TARGET_SIZE,
    rescale_factor: float = RESCALE_FACTOR,
) -> Alignment:
    """Official alignment of one face: POS of the five y-up points onto the five 3D reference points,
    then ``resize_crop_img``.

    ``image``: PIL image or (H, W, 3) uint8 RGB; ``lm5_yup``: (5, 2) official order, y-up
    (``lm5_from_insightface`` or ``extract_lm5_from_lm68`` of y-up 68 points); ``lm3d_5``: (5, 3).
    """
    image = _as_rgb(image)
    trans_params = alignment_params(lm5_yup, lm3d_5, _image_size(image), target_size, rescale_factor)
    crop, lm_crop = resize_crop_img(image, lm5_yup, trans_params)
    return Alignment(crop=crop, landmarks=np.asarray(lm_crop), trans_params=trans_params)


def to_minus_one_one(image_uint8: np.ndarray) -> np.ndarray:
    """uint8 RGB → float32 in [-1, 1] (``pillow2np(x) / 127.5 - 1`` of ``DDFAInFerPaths``)."""
    return (np.asarray(image_uint8, np.float32) / 127.5 - 1.0).astype(np.float32)
