"""Faces: user-given points (5 or 68), landmark files, choosing a face, and insightface detection run for real
on stand-in buffalo_l files (devtools.face_models) that find the fixture faces of t1.jpg."""

from __future__ import annotations

import json
import logging
import math
import random

import numpy as np
import pytest
from pipeline.photos import fixture_landmarks, fixtures_dir, sample_photo

from uvidm_backend.devtools.face_models import LANDMARK_FILE, KnownFace, known_faces, write_face_models
from uvidm_backend.geometry.align import lm5_from_insightface, lm5_from_lm68
from uvidm_backend.pipeline import faces as faces_module
from uvidm_backend.pipeline.errors import InputError, ModelFilesMissing
from uvidm_backend.pipeline.faces import (
    MIN_FACE_SPAN,
    MIN_FACE_WIDTH,
    DetectedFace,
    FaceDetector,
    FaceDetectorMissing,
    check_landmarks,
    face_from_landmarks,
    faces_from_landmarks_file,
    min_detectable_width,
    read_landmarks_file,
    select_face,
    sort_left_to_right,
)
from uvidm_backend.pipeline.images import Photo, load_photo
from uvidm_backend.pipeline.options import GenerateOptions
from uvidm_backend.registry import INSIGHTFACE_MODEL, ModelPaths

# An upright frontal face, y down, about 40 pixels between the eyes.
FRONTAL = [[100.0, 120.0], [140.0, 120.0], [120.0, 140.0], [104.0, 162.0], [136.0, 162.0]]


def blank_photo(width: int = 320, height: int = 240, name: str | None = "blank.png") -> Photo:
    pixels = np.zeros((height, width, 3), np.uint8)
    return Photo(pixels=pixels, name=name, format="PNG", mode="RGB", size=(width, height), orientation=1,
                 sha256="0" * 64)


def photo_entries():
    """(photo, faces of the fixture) for each sample photo the fixtures describe."""
    out = []
    for name, entry in fixture_landmarks().items():
        out.append((load_photo(sample_photo(name)), entry["faces"]))
    return out


def box_area(face: DetectedFace) -> float:
    return face.width * face.height


def lm5_by_formula(lm68) -> np.ndarray:
    """The official five points of 68 (1-based ids): eye corners 37/40 and 43/46, nose 31, mouth corners 49, 55."""
    lm68 = np.asarray(lm68, dtype=np.float64)
    return np.stack([(lm68[36] + lm68[39]) / 2, (lm68[42] + lm68[45]) / 2, lm68[30], lm68[48], lm68[54]])


def t1_lm68(index: int = 0) -> np.ndarray:
    return np.asarray(fixture_landmarks()["t1.jpg"]["faces"][index]["lm68"])


def test_detected_face_is_frozen_and_measures_itself():
    face = DetectedFace(box=(10, 20, 110, 140), points=FRONTAL, score=0.9)
    assert face.points.dtype == np.float64 and face.points.shape == (5, 2)
    assert (face.width, face.height, face.center) == (100.0, 120.0, (60.0, 80.0))
    assert face.eye_distance == pytest.approx(40.0)
    assert face.span == pytest.approx(42.0)  # eyes (y 120) to mouth (y 162)
    with pytest.raises(ValueError):
        face.points[0, 0] = 0.0
    with pytest.raises(AttributeError):
        face.score = 0.1  # type: ignore[misc]


def test_detected_face_from_68_points():
    lm68 = t1_lm68()
    face = DetectedFace(box=(50, 270, 170, 400), lm68=lm68, score=0.8)
    np.testing.assert_array_equal(face.lm68, lm68)
    np.testing.assert_array_equal(face.points, lm5_by_formula(lm68))
    assert face.landmarks is face.lm68 and face.landmarks_source == "lm68"
    assert not face.lm68.flags.writeable and not face.points.flags.writeable
    np.testing.assert_array_equal(face.official_lm5(886), lm5_from_lm68(lm68, 886))
    five = DetectedFace(box=(10, 20, 110, 140), points=FRONTAL, score=0.9)
    assert five.lm68 is None and five.landmarks is five.points and five.landmarks_source == "lm5"
    np.testing.assert_array_equal(five.official_lm5(240), lm5_from_insightface(FRONTAL, 240))
    with pytest.raises(ValueError, match="not both"):
        DetectedFace(box=(0, 0, 1, 1), points=FRONTAL, lm68=lm68)
    with pytest.raises(ValueError, match="needs"):
        DetectedFace(box=(0, 0, 1, 1))


def test_face_from_68_given_points():
    for photo, faces in photo_entries():
        for fixture_face in faces:
            face = face_from_landmarks(fixture_face["lm68"], photo)
            assert face.source == "landmarks" and face.landmarks_source == "given-lm68"
            np.testing.assert_array_equal(face.lm68, fixture_face["lm68"])
            np.testing.assert_array_equal(face.points, lm5_by_formula(fixture_face["lm68"]))
            # The box is estimated from the five points, as for five given points.
            assert face.box == face_from_landmarks(face.points, photo).box
    assert face_from_landmarks(FRONTAL).landmarks_source == "given-lm5"


def test_face_from_landmarks_box_follows_the_face():
    for photo, faces in photo_entries():
        for fixture_face in faces:
            face = face_from_landmarks(fixture_face["lm5"], photo)
            assert face.source == "landmarks" and face.score == 1.0
            assert np.array_equal(face.points, np.asarray(fixture_face["lm5"]))
            x0, y0, x1, y1 = face.box
            assert (face.points[:, 0] > x0).all() and (face.points[:, 0] < x1).all()
            assert (face.points[:, 1] > y0).all() and (face.points[:, 1] < y1).all()
            # The fixture's box bounds the dense landmarks (brows to chin): ours covers the same face.
            gx0, gy0, gx1, gy1 = fixture_face["bbox"]
            size = math.hypot(gx1 - gx0, gy1 - gy0)
            centre = np.array([(gx0 + gx1) / 2, (gy0 + gy1) / 2])
            assert np.linalg.norm(np.array(face.center) - centre) < 0.25 * size, photo.name
            assert 0.7 < math.hypot(face.width, face.height) / size < 1.5, photo.name


def test_face_from_landmarks_scales_and_moves_with_the_points():
    base = face_from_landmarks(FRONTAL)
    moved = face_from_landmarks(np.asarray(FRONTAL) * 2 + [10, 30])
    assert moved.width == pytest.approx(2 * base.width) and moved.height == pytest.approx(2 * base.height)
    assert moved.center == pytest.approx((2 * base.center[0] + 10, 2 * base.center[1] + 30))
    assert base.height > base.width  # faces are taller than wide


def test_face_from_landmarks_accepts_rotated_faces():
    angle = math.radians(40)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = (np.asarray(FRONTAL) - 120) @ rotation.T + 120
    face = face_from_landmarks(points, blank_photo())
    assert face.center == pytest.approx(face_from_landmarks(FRONTAL).center, abs=15)


def test_face_from_options_landmarks():
    options = GenerateOptions(landmarks=tuple(tuple(p) for p in FRONTAL))
    face = face_from_landmarks(options.landmarks, blank_photo())
    assert np.array_equal(face.points, np.asarray(FRONTAL))


def shuffled_lm68() -> np.ndarray:
    lm68 = t1_lm68()
    return lm68[np.random.default_rng(0).permutation(68)]


def jaw_reversed_lm68() -> np.ndarray:
    lm68 = t1_lm68().copy()
    lm68[:17] = lm68[16::-1]
    return lm68


@pytest.mark.parametrize("points, message", [
    (FRONTAL[:4], "five"),
    (np.zeros((67, 2)), "68"),
    ([[100.0, 120.0], [140.0, 120.0], [120.0, 121.0], [180.0, 119.0], [200.0, 121.0]], "on one line"),
    # the fixture's 68 points are read when the test runs (it skips without the fixtures)
    (shuffled_lm68, "not 68 points in the iBUG-300W order"),
    (jaw_reversed_lm68, "not 68 points in the iBUG-300W order"),
    (lambda: t1_lm68() * [1, -1] + [0, 400], "mirrored"),
    ([[1, 2, 3]] * 5, "five"),
    ("eyes", "five"),
    ([[float("nan"), 1.0]] + FRONTAL[1:], "not finite"),
    ([[120.0, 120.0]] * 5, "same spot"),
    ([FRONTAL[1], FRONTAL[0], FRONTAL[2], FRONTAL[4], FRONTAL[3]], "mirrored"),
    ([[x, 239 - y] for x, y in FRONTAL], "mirrored"),  # y counted up
    ([FRONTAL[0], FRONTAL[1], FRONTAL[2], FRONTAL[4], FRONTAL[3]], "mouth corners"),
    ([[x + 250, y] for x, y in FRONTAL], r"outside 'blank.png' \(320x240 pixels\)"),
])
def test_face_from_landmarks_refuses_bad_points(points, message):
    points = points() if callable(points) else points
    photo = blank_photo(1280, 886) if np.shape(points)[:1] == (68,) else blank_photo()  # t1.jpg's size for 68
    with pytest.raises(InputError, match=message):
        face_from_landmarks(points, photo)
    with pytest.raises(InputError, match=message):
        check_landmarks(points, photo)


def test_check_landmarks_inside_the_photo():
    lm68 = t1_lm68()  # the left-most face of t1.jpg: its jaw starts at x = 55
    assert check_landmarks(lm68, (1280, 886)).shape == (68, 2)
    assert check_landmarks(lm68.tolist()).dtype == np.float64
    # A jaw cut off by the frame is fine; the seven points the alignment uses must be in the photo.
    cut = lm68 - [70, 0]
    assert cut[:, 0].min() < 0 and face_from_landmarks(cut, blank_photo(1280, 886)).lm68 is not None
    with pytest.raises(InputError, match=r"lie outside the photo \(1280x886 pixels\)"):
        check_landmarks(lm68 - [100, 0], (1280, 886))
    with pytest.raises(InputError, match=r"lie outside 'blank.png' \(320x240 pixels\)"):
        check_landmarks(lm68, blank_photo())


def test_sort_left_to_right_and_select_by_index():
    for photo, fixture_faces in photo_entries():
        faces = [face_from_landmarks(face["lm5"], photo) for face in fixture_faces]
        shuffled = faces[:]
        random.Random(0).shuffle(shuffled)
        ordered = sort_left_to_right(shuffled)
        # The fixture lists faces left to right, as the detector's faces are numbered.
        assert [id(face) for face in ordered] == [id(face) for face in faces]
        for index, face in enumerate(ordered):
            assert select_face(ordered, index, photo=photo) is face


def test_select_largest_face_by_default():
    for photo, fixture_faces in photo_entries():
        faces = sort_left_to_right([face_from_landmarks(face["lm5"], photo) for face in fixture_faces])
        assert select_face(faces, photo=photo) is max(faces, key=box_area)
    small = face_from_landmarks(FRONTAL)
    large = face_from_landmarks(np.asarray(FRONTAL) * 1.5)
    assert select_face([small, large]) is large and select_face([large, small]) is large


def test_select_face_index_out_of_range():
    photo, fixture_faces = photo_entries()[-1]
    faces = [face_from_landmarks(face["lm5"], photo) for face in fixture_faces]
    count = len(faces)
    with pytest.raises(InputError, match=rf"face index {count} is out of range: {count} faces? found in "
                                         rf"'{photo.name}', numbered 0 to {count - 1} from left to right"):
        select_face(faces, count, photo=photo)
    with pytest.raises(InputError, match="1 face found"):
        select_face(faces[:1], 1)


def test_no_face_found():
    photo = blank_photo(1280, 886, name="empty_room.jpg")
    with pytest.raises(InputError, match=rf"no face found in 'empty_room.jpg': use a photo where the face is visible "
                                         rf"and at least {MIN_FACE_WIDTH} pixels wide, or give five points with "
                                         r"--landmarks"):
        select_face([], photo=photo)
    with pytest.raises(InputError, match="no face found in the photo"):
        select_face([], 0)


def test_detectable_width_grows_with_the_photo():
    assert min_detectable_width() == MIN_FACE_WIDTH
    assert min_detectable_width(blank_photo(640, 480)) == MIN_FACE_WIDTH
    big = blank_photo(6000, 4000)
    assert min_detectable_width(big) > min_detectable_width(blank_photo(3000, 2000)) > MIN_FACE_WIDTH
    with pytest.raises(InputError, match=f"at least {min_detectable_width(big)} pixels wide"):
        select_face([], photo=big)


def test_face_too_small():
    tiny = face_from_landmarks(np.asarray(FRONTAL) * 0.25)
    assert tiny.span < MIN_FACE_SPAN
    with pytest.raises(InputError, match=rf"the face in 'blank.png' is too small: its eyes and mouth span "
                                         rf"{tiny.span:.0f} pixels, at least {MIN_FACE_SPAN} are needed"):
        select_face([tiny], photo=blank_photo())
    narrow = DetectedFace(box=(100, 100, 130, 180), points=FRONTAL, score=0.8)  # a detector's thin box
    with pytest.raises(InputError, match=rf"box is 30x80 pixels, at least {MIN_FACE_WIDTH} on each side"):
        select_face([narrow])
    # The largest face decides; a small face beside it is no problem.
    large = face_from_landmarks(FRONTAL)
    assert select_face([tiny, large]) is large


def test_profile_face_measured_by_eyes_to_mouth():
    """A turned head brings the eyes together; eyes-to-mouth keeps its size."""
    profile = [[110.0, 120.0], [118.0, 119.0], [100.0, 140.0], [106.0, 162.0], [114.0, 162.0]]
    face = face_from_landmarks(profile)
    assert face.eye_distance < MIN_FACE_SPAN < face.span
    assert select_face([face]) is face


# Landmark files ----------------------------------------------------------------------------------


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_read_json_layouts(tmp_path):
    lm5 = np.asarray(FRONTAL)
    other = lm5 + 200
    cases = {
        "list.json": (FRONTAL, [lm5]),
        "object.json": ({"lm5": FRONTAL}, [lm5]),
        "kps.json": ({"kps": FRONTAL, "score": 0.9}, [lm5]),
        "faces.json": ({"faces": [{"lm5": FRONTAL}, {"lm5": other.tolist()}]}, [lm5, other]),
        "many.json": ([{"lm5": FRONTAL}, other.tolist()], [lm5, other]),
    }
    for name, (data, expected) in cases.items():
        got = read_landmarks_file(write_json(tmp_path / name, data))
        assert len(got) == len(expected), name
        for points, want in zip(got, expected, strict=True):
            assert points.shape == (5, 2) and np.array_equal(points, want), name


def test_read_fixture_layout_per_image():
    path = fixtures_dir() / "landmarks.json"
    data = fixture_landmarks()
    for name, entry in data.items():
        got = read_landmarks_file(path, image_name=name)
        assert len(got) == len(entry["faces"])
        for points, face in zip(got, entry["faces"], strict=True):
            assert np.array_equal(points, np.asarray(face["lm68"]))  # 68 points win over five
        # A path or another case of the name finds the same entry.
        assert np.array_equal(read_landmarks_file(path, image_name=f"/photos/{name.upper()}")[0], got[0])
    if len(data) > 1:
        with pytest.raises(InputError, match="several images"):
            read_landmarks_file(path)
    with pytest.raises(InputError, match="no landmarks for 'someone_else.jpg'"):
        read_landmarks_file(path, image_name="someone_else.jpg")


def test_read_fixture_layout_single_entry(tmp_path):
    path = write_json(tmp_path / "one.json", {"me.jpg": {"size": [320, 240], "faces": [{"lm5": FRONTAL}]}})
    assert np.array_equal(read_landmarks_file(path)[0], FRONTAL)


def test_read_68_points(tmp_path):
    for photo, faces in photo_entries():
        lm68 = np.asarray(faces[0]["lm68"])
        for name, data in (("object.json", {"lm68": lm68.tolist()}), ("list.json", lm68.tolist()),
                           ("both.json", {"lm5": faces[0]["lm5"], "lm68": lm68.tolist()})):
            got = read_landmarks_file(write_json(tmp_path / name, data))
            assert len(got) == 1 and np.array_equal(got[0], lm68), name
        text = "\n".join(f"{x} {y}" for x, y in lm68)
        assert np.array_equal(read_landmarks_file(write_text(tmp_path / "lm68.txt", text))[0], lm68)
        face = face_from_landmarks(got[0], photo)
        np.testing.assert_array_equal(face.points, lm5_by_formula(lm68))


def write_text(path, text):
    path.write_text(text)
    return path


def test_read_text_file(tmp_path):
    text = "# x y, pixels, y down\n100 120\n140,120\n\n120\t140\n104 162  # left mouth corner\n136 162\n"
    assert np.array_equal(read_landmarks_file(write_text(tmp_path / "points.txt", text))[0], FRONTAL)
    # Deep3DFaceRecon's detections/*.txt have no header and may carry a byte-order mark.
    bom = "\ufeff" + "\n".join(f"{x:.2f} {y:.2f}" for x, y in FRONTAL)
    assert np.allclose(read_landmarks_file(write_text(tmp_path / "bom.txt", bom))[0], FRONTAL)


@pytest.mark.parametrize("name, content, message", [
    ("four.txt", "1 2\n3 4\n5 6\n7 8\n", "holds 4 points where five"),
    ("word.txt", "1 2\nleft eye\n", "line 2: expected two numbers"),
    ("three.txt", "1 2 3\n", "line 1: expected two numbers 'x y', got 3"),
    ("empty.txt", "  \n", "is empty"),
    ("broken.json", "[[1, 2], [3", "not valid JSON"),
    ("keys.json", '{"eyes": 1}', "expected 'lm5', 'faces'"),
    ("face.json", '{"faces": [{"eyes": [1, 2]}]}', "a face needs one of the keys"),
    ("nan.json", json.dumps({"lm5": [[1, 2]] * 4 + [["x", 1]]}), r"\[x, y\] pairs of numbers"),
    ("scalar.json", '{"faces": 3}', "must hold a list"),
])
def test_bad_landmark_files(tmp_path, name, content, message):
    with pytest.raises(InputError, match=message):
        read_landmarks_file(write_text(tmp_path / name, content))


def test_missing_landmark_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_landmarks_file(tmp_path / "nothing.json")


def test_faces_from_landmarks_file_for_a_photo():
    path = fixtures_dir() / "landmarks.json"
    for photo, fixture_faces in photo_entries():
        faces = faces_from_landmarks_file(path, photo)
        assert [face.lm68.tolist() for face in faces] == [face["lm68"] for face in fixture_faces]
        assert {face.landmarks_source for face in faces} == {"given-lm68"}
        assert select_face(faces, photo=photo) is max(faces, key=box_area)


def test_landmarks_outside_the_photo_named_in_file_errors(tmp_path):
    elsewhere = (np.asarray(FRONTAL) + 500).tolist()
    path = write_json(tmp_path / "wrong.json", {"blank.png": {"faces": [{"lm5": FRONTAL}, {"lm5": elsewhere}]}})
    with pytest.raises(InputError, match="face 1 of 'wrong.json' lie outside 'blank.png'"):
        faces_from_landmarks_file(path, blank_photo())


# The detector --------------------------------------------------------------------------------------


def test_detector_model_missing(tmp_path):
    detector = FaceDetector(tmp_path / "insightface")
    assert detector.model_dir == tmp_path / "insightface" / "models" / INSIGHTFACE_MODEL
    with pytest.raises(ModelFilesMissing, match=r"face detector buffalo_l is missing .*`uvidm weights download`.*"
                                                r"--landmarks") as caught:
        detector.detect(blank_photo())
    assert isinstance(caught.value, FaceDetectorMissing)
    assert caught.value.command == "uvidm weights download"
    assert caught.value.missing == [str(detector.model_dir)]
    assert str(detector.model_dir) in str(caught.value)
    assert not (tmp_path / "insightface").exists()  # nothing was downloaded or created


def test_detector_model_folder_without_models(tmp_path):
    model_dir = tmp_path / "models" / INSIGHTFACE_MODEL
    model_dir.mkdir(parents=True)
    (model_dir / "readme.txt").write_text("the download was interrupted")
    with pytest.raises(FaceDetectorMissing, match="uvidm weights download"):
        FaceDetector(tmp_path).check()


def test_detector_damaged_model_file(tmp_path):
    pytest.importorskip("insightface")
    model_dir = tmp_path / "models" / INSIGHTFACE_MODEL
    model_dir.mkdir(parents=True)
    (model_dir / "det_10g.onnx").write_bytes(b"not a network")
    expected = "(could not be loaded|no face detection model).*delete that folder and get it again with `uvidm weights"
    with pytest.raises(FaceDetectorMissing, match=expected):
        FaceDetector(tmp_path, providers=["CPUExecutionProvider"]).detect(blank_photo())


def test_detector_package_missing(tmp_path, monkeypatch):
    real_find_spec = faces_module.importlib.util.find_spec
    monkeypatch.setattr(faces_module.importlib.util, "find_spec",
                        lambda name, *args: None if name == "insightface" else real_find_spec(name, *args))
    with pytest.raises(FaceDetectorMissing, match=r"needs the Python package\(s\) insightface: "
                                                  r"`pip install insightface onnxruntime`.*--landmarks"):
        FaceDetector(tmp_path).detect(blank_photo())


def test_detector_default_root_follows_weights_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("UVIDM_WEIGHTS", str(tmp_path / "w"))
    expected = ModelPaths.resolve().insightface_root / "models" / INSIGHTFACE_MODEL
    assert FaceDetector().model_dir == expected == (tmp_path / "w" / "insightface" / "models" / INSIGHTFACE_MODEL)


def test_detector_providers():
    pytest.importorskip("onnxruntime")
    assert FaceDetector(providers=["CPUExecutionProvider"])._select_providers() == (["CPUExecutionProvider"], -1)
    providers, ctx_id = FaceDetector()._select_providers()
    assert providers[-1] == "CPUExecutionProvider" and ctx_id == (0 if providers[0].startswith("CUDA") else -1)


@pytest.fixture(scope="module")
def t1_detector_root(tmp_path_factory):
    """An insightface root whose buffalo_l holds stand-in det_10g.onnx and 1k3d68.onnx finding t1.jpg's faces."""
    pytest.importorskip("insightface")
    pytest.importorskip("onnx")
    root = tmp_path_factory.mktemp("insightface")
    photo = load_photo(sample_photo("t1.jpg"))
    write_face_models(root / "models" / INSIGHTFACE_MODEL, photo.pixels, known_faces(fixture_landmarks(), "t1.jpg"))
    return root


def t1_known_faces() -> list[KnownFace]:
    return known_faces(fixture_landmarks(), "t1.jpg")


def test_detection_gives_68_points_and_their_official_five(t1_detector_root):
    """insightface's router, SCRFD decoding and NMS and its Landmark crop run on the stand-in files."""
    photo = load_photo(sample_photo("t1.jpg"))
    detector = FaceDetector(t1_detector_root, providers=["CPUExecutionProvider"])
    faces = detector.detect(photo)
    known = t1_known_faces()
    # The weaker duplicate of the first face (NMS) and the box under the score threshold are gone.
    assert len(faces) == len(known) == 6
    for face, expected in zip(faces, known, strict=True):  # both left to right
        assert face.source == "detector" and face.landmarks_source == "lm68"
        assert face.score == pytest.approx(expected.score, abs=1e-6)
        np.testing.assert_allclose(face.box, expected.box, atol=1e-3)
        np.testing.assert_allclose(face.lm68, expected.lm68, atol=1e-3)
        np.testing.assert_allclose(face.points, lm5_by_formula(expected.lm68), atol=1e-3)
        # Not the detector's key points (pupils): those lie a tenth of a pixel or more from the eye-corner means.
        assert np.abs(face.points[:2] - expected.keypoints[:2]).max() > 0.1
    largest = max(range(6), key=lambda i: (known[i].box[2] - known[i].box[0]) * (known[i].box[3] - known[i].box[1]))
    assert select_face(faces, photo=photo) is faces[largest]
    assert select_face(faces, 4, photo=photo) is faces[4]
    assert detector.detect(photo)[0].box == faces[0].box  # loaded once, answers the same


def test_detection_without_the_68_point_model_uses_the_key_points(t1_detector_root, tmp_path, caplog):
    folder = tmp_path / "models" / INSIGHTFACE_MODEL
    folder.mkdir(parents=True)
    source = t1_detector_root / "models" / INSIGHTFACE_MODEL
    for path in source.glob("*.onnx"):
        if path.name != LANDMARK_FILE:
            (folder / path.name).symlink_to(path)
    photo = load_photo(sample_photo("t1.jpg"))
    with caplog.at_level(logging.WARNING, logger=faces_module.__name__):
        faces = FaceDetector(tmp_path, providers=["CPUExecutionProvider"]).detect(photo)
    assert "68-point landmark model (1k3d68.onnx) is not in" in caplog.text
    known = t1_known_faces()
    assert len(faces) == len(known)
    for face, expected in zip(faces, known, strict=True):
        assert face.lm68 is None and face.landmarks_source == "lm5"
        np.testing.assert_allclose(face.points, expected.keypoints, atol=1e-3)


@pytest.mark.slow
def test_real_detector_on_sample_photo():
    """With the real buffalo_l installed (`uvidm weights download`): 68 points near the fixture's."""
    detector = FaceDetector()
    try:
        detector.check()
    except FaceDetectorMissing as error:
        pytest.skip(str(error))
    if not (detector.model_dir / LANDMARK_FILE).is_file():
        pytest.skip(f"{LANDMARK_FILE} is not in {detector.model_dir}")
    for photo, fixture_faces in photo_entries():
        faces = detector.detect(photo)
        if len(fixture_faces) > 1:
            assert len(faces) == len(fixture_faces)
        for face, fixture_face in zip(faces, fixture_faces, strict=False):
            assert face.landmarks_source == "lm68"
            expected = lm5_by_formula(fixture_face["lm68"])
            error = np.linalg.norm(face.points - expected, axis=1).max()
            assert error < 0.25 * face.span, (photo.name, error)
