"""Finding the face: insightface detection, or points the user gives, and the choice of one face.

The official preprocessing aligns a face by five points taken from its 68 iBUG landmarks
(``geometry.align.extract_lm5_from_lm68``: the means of each eye's two corners, the nose tip and
the mouth corners). We detect faces with insightface's ``FaceAnalysis`` (``buffalo_l``): SCRFD
(``det_10g.onnx``) finds the faces and ``1k3d68.onnx`` gives each its 68 points, from which the
five follow as the official code takes them. Only when the 68-point model is missing are the
detector's own five key points (pupils, nose, mouth corners) used, with a warning. Around that:
faces numbered left to right, the largest one by default, user-given points (5 or 68) instead of
detection, and errors that say what to do (no face, face too small, detector not installed).

Points everywhere here are (x, y) pixels of the upright photo, **y down** (rows). Five points are in
the insightface / ArcFace order: image-left eye, image-right eye, nose tip, image-left mouth
corner, image-right mouth corner (the order ``extract_lm5_from_lm68`` returns); 68 points in the
iBUG-300W order. ``DetectedFace.official_lm5`` converts them to the official y-up five points.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uvidm_backend.geometry.align import (
    LM68_TO_LM5_IDS,
    extract_lm5_from_lm68,
    lm5_from_insightface,
    lm5_from_lm68,
)
from uvidm_backend.pipeline.errors import InputError, ModelFilesMissing
from uvidm_backend.pipeline.images import Photo
from uvidm_backend.registry import INSIGHTFACE_MODEL

__all__ = [
    "DETECTION_SIZE",
    "MIN_FACE_SPAN",
    "MIN_FACE_WIDTH",
    "DetectedFace",
    "FaceDetector",
    "FaceDetectorMissing",
    "LANDMARKS_SOURCES",
    "check_face_size",
    "check_landmarks",
    "face_from_landmarks",
    "faces_from_landmarks_file",
    "min_detectable_width",
    "read_landmarks_file",
    "select_face",
    "sort_left_to_right",
]

logger = logging.getLogger(__name__)

DETECTION_SIZE = 640  # insightface's detector input side: the photo is scaled to fit it
DETECTION_THRESHOLD = 0.5  # insightface's default score threshold
MIN_FACE_SPAN = 16  # pixels: the larger of eye distance and eyes-to-mouth distance
MIN_FACE_WIDTH = 40  # pixels: the shorter side of the face box
_MIN_AT_DETECTOR = 20  # pixels a face needs at the detector's input to be found reliably

# ArcFace's 112x112 five-point template (insightface ``arcface_torch`` / ``face_align.arcface_dst``) and
# a face box in the same frame (brows and forehead to chin), to estimate a box from given points.
_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                      [41.5493, 92.3655], [70.7299, 92.2041]])
_TEMPLATE_BOX = (8.0, 8.0, 104.0, 120.0)
_POINT_NAMES = "image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner"
# Keys of a face in a landmarks file, in order of preference: 68 points are the official input.
_POINT_KEYS = ("lm68", "lm5", "kps", "landmarks", "points")
_IBUG_ORDER = "iBUG-300W order (jaw 1-17, brows 18-27, nose 28-36, eyes 37-48, mouth 49-68, counted from 1)"
# What the five points of a face were made from (result.json's face.landmarks_source).
LANDMARKS_SOURCES = ("lm68", "lm5", "given-lm68", "given-lm5")
LANDMARK_MODEL_FILE = "1k3d68.onnx"  # buffalo_l's 68-point model
LANDMARK_TASK = "landmark_3d_68"  # insightface's task name for it


class FaceDetectorMissing(ModelFilesMissing):
    """insightface, onnxruntime or the ``buffalo_l`` files are missing; the message says how to get them."""

    def __init__(self, missing: list[str], command: str, message: str):
        super().__init__(missing, command)
        self.args = (message,)


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One face of a photo: box (x0, y0, x1, y1), five points (5, 2) and, when known, its 68 iBUG points
    `lm68` (68, 2); pixels, y down; score in [0, 1].

    With `lm68`, `points` are ``extract_lm5_from_lm68(lm68)`` (give no `points`). ``source`` is
    "detector" or "landmarks" (user-given points, score 1, box estimated from them).
    """

    box: tuple[float, float, float, float]
    points: np.ndarray | None = None
    score: float = 1.0
    source: str = "detector"
    lm68: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.lm68 is not None:
            if self.points is not None:
                raise ValueError("give a face's 68 points or its five points, not both")
            lm68 = _frozen(self.lm68, 68)
            object.__setattr__(self, "lm68", lm68)
            object.__setattr__(self, "points", _frozen(extract_lm5_from_lm68(lm68), 5))
        elif self.points is None:
            raise ValueError("a face needs its five points or its 68 points")
        else:
            object.__setattr__(self, "points", _frozen(self.points, 5))
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        object.__setattr__(self, "score", float(self.score))

    @property
    def landmarks(self) -> np.ndarray:
        """The points the face was given or detected with: its 68 when known, else its five."""
        return self.lm68 if self.lm68 is not None else self.points

    @property
    def landmarks_source(self) -> str:
        """One of `LANDMARKS_SOURCES`: "lm68" / "lm5" detected, "given-lm68" / "given-lm5" given."""
        kind = "lm68" if self.lm68 is not None else "lm5"
        return f"given-{kind}" if self.source == "landmarks" else kind

    def official_lm5(self, image_height: int) -> np.ndarray:
        """The five points the official alignment takes (5, 2): y-up, float32, official order.

        From 68 points as the official code does it: y flipped, float32, then ``extract_lm5_from_lm68``.
        """
        if self.lm68 is not None:
            return lm5_from_lm68(self.lm68, image_height)
        return lm5_from_insightface(self.points, image_height)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.points[1] - self.points[0]))

    @property
    def span(self) -> float:
        """Face size from the points that survives head turns: max(eye distance, eyes-to-mouth distance)."""
        eyes = self.points[:2].mean(0)
        mouth = self.points[3:].mean(0)
        return max(self.eye_distance, float(np.linalg.norm(mouth - eyes)))


def _frozen(points: Any, count: int) -> np.ndarray:
    points = np.array(points, dtype=np.float64).reshape(count, 2)
    points.flags.writeable = False
    return points


def sort_left_to_right(faces: Sequence[DetectedFace]) -> list[DetectedFace]:
    """Faces numbered as a person counts them: by box centre, left to right (then top to bottom)."""
    return sorted(faces, key=lambda face: (face.center[0], face.center[1]))


def min_detectable_width(photo: Photo | None = None, detection_size: int = DETECTION_SIZE) -> int:
    """The face width (photo pixels) the detector needs: it sees the photo scaled to `detection_size`."""
    if photo is None:
        return MIN_FACE_WIDTH
    scale = max(photo.width, photo.height) / detection_size
    return max(MIN_FACE_WIDTH, math.ceil(_MIN_AT_DETECTOR * scale))


def select_face(faces: Sequence[DetectedFace], index: int | None = None, *, photo: Photo | None = None) -> DetectedFace:
    """The face to reconstruct: `faces[index]` (numbered left to right), or the largest box for None.

    Raises `InputError` when there is no face, the index is out of range or the face is too small.
    """
    label = photo.label if photo is not None else "the photo"
    if not faces:
        raise InputError(f"no face found in {label}: use a photo where the face is visible and at least "
                         f"{min_detectable_width(photo)} pixels wide, or give five points with --landmarks")
    if index is None:
        face = max(faces, key=lambda face: face.width * face.height)
    elif not 0 <= index < len(faces):
        found = "1 face" if len(faces) == 1 else f"{len(faces)} faces"
        raise InputError(f"face index {index} is out of range: {found} found in {label}, numbered 0 to "
                         f"{len(faces) - 1} from left to right")
    else:
        face = faces[index]
    check_face_size(face, label)
    return face


def check_face_size(face: DetectedFace, label: str = "the photo") -> None:
    """Refuses faces too small to give a texture (InputError with the size found and the minimum)."""
    advice = f"use a photo where the face is larger (at least {MIN_FACE_WIDTH} pixels wide, more is better)"
    if face.span < MIN_FACE_SPAN:
        raise InputError(f"the face in {label} is too small: its eyes and mouth span {face.span:.0f} pixels, "
                         f"at least {MIN_FACE_SPAN} are needed: {advice}")
    side = min(face.width, face.height)
    if side < MIN_FACE_WIDTH:
        raise InputError(f"the face in {label} is too small: its box is {face.width:.0f}x{face.height:.0f} pixels, "
                         f"at least {MIN_FACE_WIDTH} on each side are needed: {advice}")


def face_from_landmarks(points: Any, photo: Photo | None = None, *, what: str = "the landmarks") -> DetectedFace:
    """A `DetectedFace` from user-given points: five (insightface order) or 68 (iBUG order), x, y pixels, y down.

    The points are checked by `check_landmarks`. The box is ArcFace's template face box carried onto
    the five points by a least-squares similarity, so it grows with the face and follows its position
    like a detector's box (not its rotation).
    """
    points = check_landmarks(points, photo, what=what)
    lm68 = points if len(points) == 68 else None
    five = extract_lm5_from_lm68(points) if lm68 is not None else points
    scale, rotation, shift = _similarity(_TEMPLATE, five)
    x0, y0, x1, y1 = _TEMPLATE_BOX
    cx, cy = scale * (rotation @ np.array([(x0 + x1) / 2, (y0 + y1) / 2])) + shift
    half_w, half_h = scale * (x1 - x0) / 2, scale * (y1 - y0) / 2
    box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
    if lm68 is not None:
        return DetectedFace(box=box, lm68=lm68, score=1.0, source="landmarks")
    return DetectedFace(box=box, points=five, score=1.0, source="landmarks")


def check_landmarks(points: Any, photo: Photo | tuple[int, int] | None = None, *,
                    what: str = "the landmarks") -> np.ndarray:
    """The points as a (5, 2) or (68, 2) float64 array, once they are fit to align a face; else `InputError`.

    Five points in the insightface order or 68 in the iBUG-300W order, x, y pixels, y down. Checked:
    finite numbers; eyes and mouth apart and not on one line; not mirrored (left and right swapped,
    or y counted up); 68 points in the iBUG order (brows above the eyes, nose between eyes and mouth,
    chin below the mouth, jaw from the image-left side); and, given the photo (a `Photo` or its
    (width, height)), the points the alignment uses inside it (the five, or the seven of the 68 that
    give them; a jaw cut off by the frame is fine).
    """
    try:
        points = np.array(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be five or 68 (x, y) numbers: {_POINT_NAMES}, or 68 points in the "
                         f"{_IBUG_ORDER}") from None
    if points.ndim != 2 or points.shape[1] != 2 or len(points) not in (5, 68):
        raise InputError(f"{what} must be five (x, y) points ({_POINT_NAMES}) or 68 in the {_IBUG_ORDER}, got an "
                         f"array of shape {points.shape}")
    if not np.isfinite(points).all():
        raise InputError(f"{what} contain values that are not finite numbers")
    five = extract_lm5_from_lm68(points) if len(points) == 68 else points
    eyes = five[1] - five[0]
    down = five[3:].mean(0) - five[:2].mean(0)
    if np.linalg.norm(eyes) < 1.0 or np.linalg.norm(down) < 1.0:
        raise InputError(f"{what} put both eyes, or the eyes and the mouth, on the same spot: give the five points "
                         f"{_POINT_NAMES}")
    if len(points) == 68:  # first: another order would make the five points look mirrored or flat
        _check_ibug_order(points, what)
    _check_order(five, what, f"in the {_IBUG_ORDER}" if len(points) == 68 else f"in the order {_POINT_NAMES}")
    if photo is not None:
        width, height, label = ((photo.width, photo.height, photo.label) if isinstance(photo, Photo)
                                else (*photo, "the photo"))
        used = points[np.asarray(LM68_TO_LM5_IDS) - 1] if len(points) == 68 else points
        low, high = used.min(0), used.max(0)
        if low[0] < 0 or low[1] < 0 or high[0] > width or high[1] > height:
            raise InputError(f"{what} lie outside {label} ({width}x{height} pixels): give them in "
                             "pixels of this photo as it is shown (after its EXIF rotation), y counted down from "
                             "the top")
    return points


def _check_order(points: np.ndarray, what: str, order: str = f"in the order {_POINT_NAMES}") -> None:
    """Mirrored orders (eyes or mouth corners swapped, or y counted up) would fit a mirrored head."""
    eyes = points[1] - points[0]
    mouth = points[4] - points[3]
    down = points[3:].mean(0) - points[:2].mean(0)
    hint = f"give them {order}, with y counted down from the top of the photo"
    # In y-down pixels the eye vector turns clockwise onto the eyes-to-mouth vector: a positive cross product.
    sine = (eyes[0] * down[1] - eyes[1] * down[0]) / (np.linalg.norm(eyes) * np.linalg.norm(down))
    if sine < -0.5:
        raise InputError(f"{what} look mirrored (left and right swapped, or y counted up): {hint}")
    if sine < 0.25:  # the mouth beside the eyes, not below them: no face has that
        raise InputError(f"{what} put the eyes and the mouth on one line: {hint}")
    if np.linalg.norm(mouth) >= 1.0 and np.dot(eyes, mouth) / (np.linalg.norm(eyes) * np.linalg.norm(mouth)) < -0.5:
        raise InputError(f"{what} have the mouth corners in the opposite order of the eyes: {hint}")


def _check_ibug_order(lm68: np.ndarray, what: str) -> None:
    """68 points in another order (another landmark scheme) would give wrong eyes, nose and mouth."""
    five = extract_lm5_from_lm68(lm68)
    eyes_centre, mouth_centre = five[:2].mean(0), five[3:].mean(0)
    down = mouth_centre - eyes_centre
    across = five[1] - five[0]

    def depth(point: np.ndarray) -> float:  # along eyes -> mouth: 0 at the eyes, 1 at the mouth
        return float(np.dot(point - eyes_centre, down) / np.dot(down, down))

    fits = (depth(lm68[17:27].mean(0)) < 0  # brows above the eyes
            and 0 < depth(lm68[30]) < 1  # nose tip between eyes and mouth
            and depth(lm68[8]) > 1  # chin below the mouth
            and np.dot(lm68[16] - lm68[0], across) > 0)  # jaw from the image-left side to the right
    if not fits:
        raise InputError(f"{what} are not 68 points in the {_IBUG_ORDER}: brows, nose tip, chin or jaw are not "
                         "where that order puts them")


def _similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (scale, 2x2 rotation, shift) taking `source` points onto `target` points."""
    rows = []
    for x, y in source:
        rows.append([x, -y, 1.0, 0.0])
        rows.append([y, x, 0.0, 1.0])
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), target.reshape(-1), rcond=None)[0]
    scale = math.hypot(a, b)
    rotation = np.array([[a, -b], [b, a]]) / scale
    return scale, rotation, np.array([tx, ty])


def read_landmarks_file(path: str | Path, image_name: str | None = None) -> list[np.ndarray]:
    """Point sets from a landmarks file, one per face, in file order: each (5, 2) or (68, 2), pixels, y down.

    Accepted: JSON with a list of 5 or 68 [x, y]; {"lm68": [...]} or {"lm5": [...]} (also "kps",
    "landmarks", "points"; a face with both "lm68" and "lm5" gives its 68); {"faces": [...]} or a
    list of such faces; the fixtures layout {image name: {"size": ..., "faces": [...]}}, where
    `image_name` picks the entry (needed when there are several). Plain text: 5 or 68 lines "x y"
    (commas or tabs also separate; # comments). 68 points are in the iBUG-300W order; the
    alignment takes its five from them as the official ``extract_lm5_from_lm68``.
    """
    path = Path(path).expanduser()
    label = f"landmarks file {path.name!r}"
    if not path.is_file():
        raise InputError(f"landmarks file {str(path)!r} not found: check the path")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{label} could not be read as text ({error}): give JSON or lines of 'x y'") from None
    stripped = text.lstrip()
    if not stripped:
        raise InputError(f"{label} is empty: give five lines 'x y' ({_POINT_NAMES})")
    if stripped[0] in "[{":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{label} is not valid JSON ({error})") from None
        faces = _faces_from_json(data, label, image_name)
    else:
        faces = [_points_from_text(text, label)]
    if not faces:
        raise InputError(f"{label} holds no faces")
    return faces


def faces_from_landmarks_file(path: str | Path, photo: Photo) -> list[DetectedFace]:
    """The faces a landmarks file gives for `photo` (entry picked by the photo's file name), left to right."""
    sets = read_landmarks_file(path, image_name=photo.name)
    many = len(sets) > 1
    return sort_left_to_right([
        face_from_landmarks(points, photo, what=f"face {number} of {Path(path).name!r}" if many else
                            f"the points of {Path(path).name!r}")
        for number, points in enumerate(sets)
    ])


def _points_from_text(text: str, label: str) -> np.ndarray:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        fields = line.split()
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise InputError(f"{label}, line {number}: expected two numbers 'x y', got {line!r}") from None
        if len(values) != 2:
            raise InputError(f"{label}, line {number}: expected two numbers 'x y', got {len(values)}")
        rows.append(values)
    return _point_set(rows, label)


def _point_set(value: Any, label: str) -> np.ndarray:
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{label}: points must be [x, y] pairs of numbers") from None
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] not in (5, 68):
        count = points.shape[0] if points.ndim >= 1 else 0
        raise InputError(f"{label} holds {count} points where five [x, y] are needed ({_POINT_NAMES}), "
                         f"or 68 in the {_IBUG_ORDER}")
    if not np.isfinite(points).all():
        raise InputError(f"{label} holds values that are not finite numbers")
    return points


def _is_point_list(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in value))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _face_points(face: Any, label: str) -> np.ndarray:
    if isinstance(face, dict):
        for key in _POINT_KEYS:
            if key in face:
                return _point_set(face[key], label)
        raise InputError(f"{label}: a face needs one of the keys {', '.join(_POINT_KEYS)} (found "
                         f"{', '.join(map(str, face)) or 'none'})")
    return _point_set(face, label)


def _faces_from_json(data: Any, label: str, image_name: str | None) -> list[np.ndarray]:
    if _is_point_list(data):
        return [_point_set(data, label)]
    if isinstance(data, list):
        return [_face_points(face, f"{label}, face {number}") for number, face in enumerate(data)]
    if not isinstance(data, dict):
        raise InputError(f"{label} must hold a list of [x, y] points or an object, not {type(data).__name__}")
    if any(key in data for key in _POINT_KEYS):
        return [_face_points(data, label)]
    if "faces" in data:
        return _faces_from_json(data["faces"], label, None)
    # The fixtures layout: one entry per image file name.
    entries = {key: value for key, value in data.items() if isinstance(value, dict | list)}
    if not entries:
        raise InputError(f"{label}: expected 'lm5', 'faces' or entries per image name; found keys "
                         f"{', '.join(map(str, data)) or 'none'}")
    key = _pick_entry(list(entries), image_name, label)
    return _faces_from_json(entries[key], f"{label}, {key!r}", None)


def _pick_entry(names: list[str], image_name: str | None, label: str) -> str:
    if image_name is not None:
        wanted = Path(image_name).name
        for match in (lambda n: n == wanted, lambda n: n.lower() == wanted.lower(),
                      lambda n: Path(n).stem.lower() == Path(wanted).stem.lower()):
            found = [name for name in names if match(name)]
            if len(found) == 1:
                return found[0]
        raise InputError(f"{label} has no landmarks for {wanted!r} (it has {', '.join(names)})")
    if len(names) == 1:
        return names[0]
    raise InputError(f"{label} holds landmarks of several images ({', '.join(names)}): say which photo they belong to")


class FaceDetector:
    """insightface's ``FaceAnalysis`` (``buffalo_l``: detection and 68 points), loaded at the first `detect`.

    `model_root` is insightface's root folder (``ModelPaths.insightface_root``: the model lies in
    ``<root>/models/buffalo_l``). Providers: CUDA when onnxruntime has it, else CPU, unless given.
    Nothing is ever downloaded here: a missing model raises `FaceDetectorMissing` naming
    ``uvidm weights download``. Without ``1k3d68.onnx`` faces keep the detector's five key points
    (a warning says so): the official alignment takes its five points from 68.
    """

    def __init__(self, model_root: str | Path | None = None, *, providers: Sequence[str] | None = None,
                 detection_size: int = DETECTION_SIZE, threshold: float = DETECTION_THRESHOLD):
        if model_root is None:
            from uvidm_backend.registry import ModelPaths

            model_root = ModelPaths.resolve().insightface_root
        self.model_root = Path(model_root).expanduser().resolve()
        self.providers = list(providers) if providers is not None else None
        self.detection_size = int(detection_size)
        self.threshold = float(threshold)
        self._analysis: Any = None
        self._lock = threading.Lock()

    @property
    def model_dir(self) -> Path:
        return self.model_root / "models" / INSIGHTFACE_MODEL

    def check(self) -> None:
        """Raises `FaceDetectorMissing` unless insightface, onnxruntime and the model files are there."""
        absent = [name for name in ("insightface", "onnxruntime") if importlib.util.find_spec(name) is None]
        if absent:
            raise FaceDetectorMissing(absent, "pip install insightface onnxruntime",
                                      f"face detection needs the Python package(s) {' and '.join(absent)}: "
                                      "`pip install insightface onnxruntime` (onnxruntime-gpu for CUDA), "
                                      "or give five points with --landmarks")
        if not self.model_dir.is_dir() or not any(self.model_dir.glob("*.onnx")):
            raise self._model_missing(f"the face detector {INSIGHTFACE_MODEL} is missing (looked in {self.model_dir})")

    def _model_missing(self, what: str, again: bool = False) -> FaceDetectorMissing:
        get = "delete that folder and get it again" if again else "get it"
        return FaceDetectorMissing([str(self.model_dir)], "uvidm weights download",
                                   f"{what}: {get} with `uvidm weights download`, or give five points with "
                                   "--landmarks")

    def _select_providers(self) -> tuple[list[str], int]:
        import onnxruntime

        if self.providers is not None:
            providers = self.providers
        elif "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        return providers, (0 if providers[0] == "CUDAExecutionProvider" else -1)

    def _create(self) -> Any:
        self.check()
        try:
            from insightface.app import FaceAnalysis
        except ImportError as error:
            raise FaceDetectorMissing(["insightface"], "pip install insightface onnxruntime",
                                      f"insightface could not be imported ({error}): reinstall it with "
                                      "`pip install insightface onnxruntime`, or give five points with "
                                      "--landmarks") from error
        providers, ctx_id = self._select_providers()
        chatter = io.StringIO()
        try:
            # The absolute model folder as `name`: insightface then uses it as it is and never downloads
            # (nor picks up a "buffalo_l" folder in the working directory). Older releases print what they load.
            with contextlib.redirect_stdout(chatter):
                analysis = FaceAnalysis(name=str(self.model_dir), root=str(self.model_root),
                                        allowed_modules=["detection", LANDMARK_TASK], providers=providers)
                analysis.prepare(ctx_id=ctx_id, det_thresh=self.threshold,
                                 det_size=(self.detection_size, self.detection_size))
        except AssertionError:  # FaceAnalysis asserts it found a detection model
            raise self._model_missing(f"{self.model_dir} holds no face detection model", again=True) from None
        except Exception as error:  # onnxruntime's errors on damaged files have no common base class
            raise self._model_missing(f"the face detector in {self.model_dir} could not be loaded ({error})",
                                      again=True) from error
        if chatter.getvalue().strip():
            logger.debug("insightface: %s", chatter.getvalue().strip())
        if LANDMARK_TASK not in analysis.models:
            logger.warning("the 68-point landmark model (%s) is not in %s: faces are aligned by the detector's five "
                           "points, not as the official preprocessing does; get it with `uvidm weights download`",
                           LANDMARK_MODEL_FILE, self.model_dir)
        logger.info("face detector %s loaded from %s (%s)", INSIGHTFACE_MODEL, self.model_dir, providers[0])
        return analysis

    def detect(self, photo: Photo) -> list[DetectedFace]:
        """All faces insightface finds in `photo`, left to right; an empty list when there is none."""
        with self._lock:
            if self._analysis is None:
                self._analysis = self._create()
            # insightface takes OpenCV's BGR order.
            found = self._analysis.get(np.ascontiguousarray(photo.pixels[:, :, ::-1]))
        faces = []
        for face in found:
            box = tuple(np.asarray(face.bbox, dtype=np.float64)[:4])
            lm68 = face.get(LANDMARK_TASK)
            if lm68 is not None:  # (68, 3): x, y in photo pixels and a depth we do not use
                faces.append(DetectedFace(box=box, lm68=np.asarray(lm68, dtype=np.float64)[:, :2],
                                          score=float(face.det_score)))
            elif face.get("kps") is not None:
                faces.append(DetectedFace(box=box, points=np.asarray(face.kps, dtype=np.float64),
                                          score=float(face.det_score)))
            else:
                logger.warning("the detector gave a face without its points; skipped")
        logger.debug("%d face(s) found in %s", len(faces), photo.label)
        return sort_left_to_right(faces)
