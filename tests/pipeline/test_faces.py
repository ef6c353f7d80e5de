"""Faces: user-given points, landmark files, choosing a face, and the insightface wrapper's errors."""

from __future__ import annotations

import json
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
from pipeline.photos import fixture_landmarks, fixtures_dir, sample_photo

from uvidm_backend.geometry.align import extract_lm5_from_lm68
from uvidm_backend.pipeline import faces as faces_module
from uvidm_backend.pipeline.errors import InputError, ModelFilesMissing
from uvidm_backend.pipeline.faces import (
    MIN_FACE_SPAN,
    MIN_FACE_WIDTH,
    DetectedFace,
    FaceDetector,
    FaceDetectorMissing,
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


@pytest.mark.parametrize("points, message", [
    (FRONTAL[:4], "five"),
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
    with pytest.raises(InputError, match=message):
        face_from_landmarks(points, blank_photo())


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
            assert np.array_equal(points, np.asarray(face["lm5"]))
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
        got = read_landmarks_file(write_json(tmp_path / "lm68.json", {"lm68": lm68.tolist()}))
        assert np.allclose(got[0], extract_lm5_from_lm68(lm68))
        text = "\n".join(f"{x} {y}" for x, y in lm68)
        assert np.allclose(read_landmarks_file(write_text(tmp_path / "lm68.txt", text))[0], got[0])
        face_from_landmarks(got[0], photo)  # the official reduction keeps the insightface order


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
        assert [face.points.tolist() for face in faces] == [face["lm5"] for face in fixture_faces]
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


class FakeAnalysis:
    """Stands in for insightface's FaceAnalysis: records what it is given, returns right-to-left faces."""

    def __init__(self, faces):
        self.faces = faces
        self.images = []

    def get(self, image):
        self.images.append(image)
        return self.faces


def test_detect_converts_and_sorts(monkeypatch):
    right = SimpleNamespace(bbox=np.array([200, 50, 300, 170], np.float32),
                            kps=np.asarray(FRONTAL, np.float32) + [130, -40], det_score=np.float32(0.8))
    left = SimpleNamespace(bbox=np.array([80, 90, 170, 200], np.float32),
                           kps=np.asarray(FRONTAL, np.float32) + [5, 10], det_score=np.float32(0.9))
    no_points = SimpleNamespace(bbox=np.array([0, 0, 50, 50], np.float32), kps=None, det_score=0.7)
    fake = FakeAnalysis([right, no_points, left])
    created = []

    def create(self):
        created.append(self)
        return fake

    monkeypatch.setattr(FaceDetector, "_create", create)
    detector = FaceDetector("/nonexistent")
    pixels = np.zeros((240, 320, 3), np.uint8)
    pixels[..., 0] = 10  # red
    pixels[..., 2] = 200  # blue
    photo = Photo(pixels=pixels, name="two.png", format="PNG", mode="RGB", size=(320, 240), orientation=1,
                  sha256="0" * 64)
    faces = detector.detect(photo)
    detector.detect(photo)
    assert len(created) == 1  # created once, at the first detect
    assert fake.images[0][0, 0].tolist() == [200, 0, 10]  # insightface reads BGR
    assert fake.images[0].flags.c_contiguous
    assert [face.score for face in faces] == pytest.approx([0.9, 0.8])
    assert faces[0].box == (80.0, 90.0, 170.0, 200.0) and faces[0].source == "detector"
    assert np.allclose(faces[0].points, np.asarray(FRONTAL) + [5, 10])
    assert select_face(faces, photo=photo) is faces[1]  # the larger box


@pytest.mark.slow
def test_real_detector_on_sample_photo():
    """With buffalo_l installed (`uvidm weights download`), detection agrees with the fixture's points."""
    detector = FaceDetector()
    try:
        detector.check()
    except FaceDetectorMissing as error:
        pytest.skip(str(error))
    for photo, fixture_faces in photo_entries():
        faces = detector.detect(photo)
        if len(fixture_faces) > 1:
            assert len(faces) == len(fixture_faces)
        for face, fixture_face in zip(faces, fixture_faces, strict=False):
            expected = np.asarray(fixture_face["lm5"])
            error = np.linalg.norm(face.points - expected, axis=1).max()
            assert error < 0.25 * face.span, (photo.name, error)
