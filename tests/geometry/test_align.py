"""Landmark conventions, POS alignment and paste-back (self-contained, no stored vectors)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from refdata import REPO_ROOT

from uvidm_backend.geometry.align import (
    Alignment,
    align_face,
    alignment_params,
    crop_box,
    extract_lm5_from_lm68,
    lm5_from_insightface,
    lm5_from_lm68,
    pos,
    resize_crop_img,
    ydown_to_yup,
)

# Rough 3D positions of the five points on an average face (eyes, nose tip, mouth corners; y up,
# z towards the camera, units of about 10 cm), in the official order. Only needs to be plausible.
LM3D_5 = np.array(
    [
        [-0.31, 0.29, 0.13],
        [0.31, 0.29, 0.13],
        [0.0, -0.05, 0.55],
        [-0.25, -0.38, 0.22],
        [0.25, -0.38, 0.22],
    ]
)


def fixtures_dir() -> Path:
    return Path(os.environ.get("UVIDM_FIXTURES_DIR", REPO_ROOT.parent / "shared" / "fixtures"))


def landmark_faces() -> list[tuple[str, int, int, dict]]:
    """(image name, width, height, face) for every face of landmarks.json; skips when absent."""
    path = fixtures_dir() / "landmarks.json"
    if not path.is_file():
        pytest.skip(f"{path} not found (set UVIDM_FIXTURES_DIR)")
    data = json.loads(path.read_text())
    return [(name, *entry["size"], face) for name, entry in data.items() for face in entry["faces"]]


def _synthetic_lm68() -> np.ndarray:
    """68 distinct points; eye corners, nose tip and mouth corners at known places (y-up)."""
    lm68 = np.stack([np.arange(68.0), 1000.0 + np.arange(68.0)], axis=1)
    lm68[30] = [50, 40]  # nose tip (id 31)
    lm68[36], lm68[39] = [20, 60], [34, 62]  # image-left eye corners (37, 40)
    lm68[42], lm68[45] = [66, 62], [80, 60]  # image-right eye corners (43, 46)
    lm68[48], lm68[54] = [30, 20], [70, 22]  # mouth corners (49, 55)
    return lm68


def test_extract_lm5_from_lm68_order():
    lm5 = extract_lm5_from_lm68(_synthetic_lm68())
    expected = [[27, 61], [73, 61], [50, 40], [30, 20], [70, 22]]
    np.testing.assert_array_equal(lm5, expected)


def official_lm5_by_formula(lm68: np.ndarray) -> np.ndarray:
    """The official five points written out (1-based iBUG ids): eye corners 37/40 and 43/46, nose 31, mouth 49, 55."""
    def point(number):
        return lm68[number - 1]

    return np.stack([(point(37) + point(40)) / 2, (point(43) + point(46)) / 2, point(31), point(49), point(55)])


def test_extract_lm5_from_lm68_follows_the_formula():
    rng = np.random.default_rng(3)
    cases = [rng.uniform(0, 1000, (68, 2)), rng.uniform(-5, 5, (68, 3))]
    cases += [np.asarray(face["lm68"]) for *_, face in landmark_faces()]
    for lm68 in cases:
        np.testing.assert_array_equal(extract_lm5_from_lm68(lm68), official_lm5_by_formula(lm68))


def test_lm5_from_lm68_flips_then_casts_then_extracts():
    """The official order: 68 y-down rows -> y-up (H - 1 - row) -> float32 -> five points."""
    for _, _, height, face in landmark_faces():
        rows = np.asarray(face["lm68"])
        yup = np.stack([rows[:, 0], height - 1 - rows[:, 1]], axis=1).astype(np.float32)
        got = lm5_from_lm68(rows, height)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, official_lm5_by_formula(yup))
    with pytest.raises(ValueError):
        lm5_from_lm68(np.zeros((5, 2)), 100)


def official_pos(lm2d: np.ndarray, lm3d: np.ndarray) -> tuple[np.ndarray, float]:
    """Weak perspective x = R1 . X + t0, y = R2 . X + t1 by the normal equations; scale = mean row norm."""
    rows = []
    for X in lm3d:
        rows.append([*X, 1.0, 0, 0, 0, 0])
        rows.append([0, 0, 0, 0, *X, 1.0])
    a = np.array(rows)
    k = np.linalg.solve(a.T @ a, a.T @ np.asarray(lm2d, np.float64).reshape(-1))
    return np.array([k[3], k[7]]), (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2


def test_official_alignment_on_68_points():
    """align_face on the five points of 68 (as the pipeline takes them) against the chain written out:
    y-up float32 68 points, their five by the formula, POS, trans_params and the PIL resize-and-crop."""
    from pipeline.photos import sample_photo

    from uvidm_backend.pipeline.faces import face_from_landmarks
    from uvidm_backend.pipeline.images import load_photo

    photo = load_photo(sample_photo("t1.jpg"))
    image = Image.fromarray(photo.pixels)
    height, width = photo.height, photo.width
    faces = [face for name, *_, face in landmark_faces() if name == "t1.jpg"]
    assert faces
    for face in faces:
        rows = np.asarray(face["lm68"])
        yup = np.stack([rows[:, 0], height - 1 - rows[:, 1]], axis=1).astype(np.float32)
        lm5 = official_lm5_by_formula(yup)
        t, s = official_pos(lm5, LM3D_5)
        scale = 102.0 / s
        expected_params = np.array([width, height, scale, t[0], t[1], 224])
        w, h = int(width * scale), int(height * scale)
        left = int(w / 2 - 112 + (t[0] - width / 2) * scale)
        up = int(h / 2 - 112 + (height / 2 - t[1]) * scale)
        expected_crop = np.asarray(image.resize((w, h), Image.BICUBIC).crop((left, up, left + 224, up + 224)))
        expected_lm = (lm5 - t + [width / 2, height / 2]) * scale - [w / 2 - 112, h / 2 - 112]

        given = face_from_landmarks(rows, photo)
        alignment = align_face(photo.pixels, given.official_lm5(height), LM3D_5)
        np.testing.assert_allclose(alignment.trans_params, expected_params, rtol=1e-9)
        assert crop_box(alignment.trans_params) == (w, h, left, up)
        np.testing.assert_array_equal(alignment.crop, expected_crop)
        np.testing.assert_allclose(alignment.landmarks, expected_lm, atol=1e-6)


def test_extract_lm5_keeps_dtype_and_3d():
    lm68 = np.concatenate([_synthetic_lm68(), np.arange(68.0)[:, None]], axis=1).astype(np.float32)
    lm5 = extract_lm5_from_lm68(lm68)
    assert lm5.shape == (5, 3) and lm5.dtype == np.float32
    assert lm5[2, 2] == 30.0  # nose tip's z


def test_ydown_to_yup_is_an_involution():
    pts = np.array([[3.5, 0.0], [10.0, 99.0]])
    up = ydown_to_yup(pts, 100)
    np.testing.assert_array_equal(up, [[3.5, 99.0], [10.0, 0.0]])
    np.testing.assert_array_equal(ydown_to_yup(up, 100), pts)
    assert pts[0, 1] == 0.0  # input untouched


def test_lm5_from_insightface_converts_y_only():
    kps = np.array([[30.0, 40.0], [70.0, 41.0], [50.0, 60.0], [35.0, 80.0], [65.0, 81.0]])
    lm5 = lm5_from_insightface(kps, image_height=112)
    assert lm5.dtype == np.float32
    np.testing.assert_array_equal(lm5[:, 0], kps[:, 0])
    np.testing.assert_array_equal(lm5[:, 1], 111 - kps[:, 1])
    with pytest.raises(ValueError):
        lm5_from_insightface(kps[:4], 112)


def test_pos_recovers_weak_perspective():
    rng = np.random.default_rng(0)
    lm3d = rng.standard_normal((5, 3))
    scale, t = 130.0, np.array([150.0, 210.0])
    angle = 0.3
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0]])
    lm2d = scale * lm3d @ rot.T + t
    t_fit, s_fit = pos(lm2d, lm3d)
    assert t_fit.shape == (2,)
    np.testing.assert_allclose(t_fit, t, atol=1e-9)
    assert s_fit == pytest.approx(scale, rel=1e-12)


def _lm5_of(face: dict, height: int) -> np.ndarray:
    return lm5_from_insightface(face["lm5"], height)


def test_insightface_five_points_match_lm68_five_points():
    """Both routes to the official five points agree on the fixture faces (a few pixels)."""
    for name, _, height, face in landmark_faces():
        from_kps = _lm5_of(face, height)
        from_lm68 = extract_lm5_from_lm68(ydown_to_yup(np.array(face["lm68"]), height))
        iod = np.linalg.norm(from_kps[1] - from_kps[0])
        err = np.linalg.norm(from_kps - from_lm68, axis=1).max()
        assert err < 5.0 and err < 0.2 * iod, f"{name}: five points differ by {err:.2f} px (iod {iod:.1f})"


def test_alignment_places_eyes_consistently():
    """All faces land in the crop the same way: eyes above nose above mouth (y-up crop
    coordinates), eye centre near the same spot, a face-sized eye distance."""
    eye_centres = []
    for name, width, height, face in landmark_faces():
        image = Image.new("RGB", (width, height))
        alignment = align_face(image, _lm5_of(face, height), LM3D_5)
        lm = alignment.landmarks
        assert alignment.crop.shape == (224, 224, 3) and alignment.crop.dtype == np.uint8
        assert np.all((lm > 0) & (lm < 224)), name
        assert lm[0, 0] < lm[1, 0], f"{name}: eyes swapped"
        assert min(lm[0, 1], lm[1, 1]) > lm[2, 1] > max(lm[3, 1], lm[4, 1]), f"{name}: y axis"
        assert 25.0 < np.linalg.norm(lm[1] - lm[0]) < 75.0, name
        eye_centres.append(lm[:2].mean(0))
    eye_centres = np.array(eye_centres)
    spread = np.abs(eye_centres - np.median(eye_centres, axis=0)).max()
    assert spread < 25.0, f"eye centres spread {spread:.1f} px: {eye_centres.round(1).tolist()}"
    assert np.all(np.abs(np.median(eye_centres, axis=0) - [112, 135]) < 20)


def test_alignment_dataclass():
    image = np.zeros((120, 100, 3), np.uint8)
    lm5 = np.array([[35, 70], [65, 70], [50, 55], [38, 40], [62, 40]], np.float32)
    alignment = align_face(image, lm5, LM3D_5)
    assert isinstance(alignment, Alignment)
    assert alignment.image_size == (100, 120)
    assert alignment.trans_params.dtype == np.float64 and alignment.trans_params[5] == 224
    np.testing.assert_array_equal(alignment.trans_params, alignment_params(lm5, LM3D_5, (100, 120)))
    np.testing.assert_allclose(alignment.to_crop(lm5), alignment.landmarks)
    with pytest.raises(AttributeError):
        alignment.crop = None
    model_input = alignment.model_input()
    assert model_input.dtype == np.float32 and model_input.min() >= -1.0


def test_resize_crop_img_accepts_pil_and_array():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    params = np.array([70, 90, 2.1, 33.0, 47.0, 64])
    crop_a, lm_a = resize_crop_img(image, np.zeros((1, 2)), params)
    crop_b, lm_b = resize_crop_img(Image.fromarray(image), np.zeros((1, 2)), params)
    np.testing.assert_array_equal(crop_a, crop_b)
    assert crop_a.shape == (64, 64, 3)
    with pytest.raises(ValueError):
        resize_crop_img(image, np.zeros((1, 2)), np.array([71, 90, 2.1, 33.0, 47.0, 64]))


def test_crop_box_truncates_like_the_official():
    """int() truncates towards zero (also for a corner left of the photo), in the params' dtype."""
    params = np.array([640, 480, 0.5, 300.2, 250.7, 224])
    assert crop_box(params) == (320, 240, 38, 2)
    assert crop_box(params.astype(np.float32)) == (320, 240, 38, 2)
    params[3] = 200.5  # left = int(48 - 59.75)
    assert crop_box(params)[2] == -11


def _gradient_photo(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([0.2 * x + 20, 0.15 * y + 10, 0.1 * (x + y) + 5], axis=-1)


def _crop_float(channel: np.ndarray, params: np.ndarray) -> np.ndarray:
    w, h, left, up = crop_box(params)
    image = Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))
    return np.asarray(image.resize((w, h), Image.BICUBIC).crop((left, up, left + 224, up + 224)))
