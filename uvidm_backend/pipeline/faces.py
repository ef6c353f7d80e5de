"""Finding the face: insightface detection, or five points the user gives, and the choice of one face.

The official preprocessing runs insightface ``FaceAnalysis`` (``buffalo_l``) on the photo and keeps
the five ``kps`` of a face, which ``geometry.align`` then turns into the 224 crop of Deep3DFaceRecon.
We keep that detector and its points unchanged, and add what a tool needs around it: faces numbered
left to right, the largest one by default, user-given points instead of detection, and errors that
say what to do (no face, face too small, detector not installed).

Points everywhere here are five (x, y) pixels of the upright photo, **y down** (rows), in the
insightface / ArcFace order: image-left eye, image-right eye, nose tip, image-left mouth corner,
image-right mouth corner. ``geometry.align.lm5_from_insightface`` converts them to the official y-up.
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
    "check_face_size",
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
_POINT_KEYS = ("lm5", "kps", "landmarks", "points", "lm68")


class FaceDetectorMissing(ModelFilesMissing):
    """insightface, onnxruntime or the ``buffalo_l`` files are missing; the message says how to get them."""

    def __init__(self, missing: list[str], command: str, message: str):
        super().__init__(missing, command)
        self.args = (message,)


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One face of a photo: box (x0, y0, x1, y1) and five points (5, 2), pixels, y down; score in [0, 1].

    ``source`` is "detector" or "landmarks" (user-given points, score 1, box estimated from them).
    """

    box: tuple[float, float, float, float]
    points: np.ndarray
    score: float
    source: str = "detector"

    def __post_init__(self) -> None:
        points = np.array(self.points, dtype=np.float64).reshape(5, 2)
        points.flags.writeable = False
        object.__setattr__(self, "points", points)
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        object.__setattr__(self, "score", float(self.score))

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
    """A `DetectedFace` from five user-given points (x, y pixels, y down, insightface order).

    The box is ArcFace's template face box carried onto the points by a least-squares similarity,
    so it grows with the face and follows its position like a detector's box (not its rotation).
    Checks the points are finite, distinct, in the photo and not in mirrored order.
    """
    try:
        points = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be five (x, y) numbers: {_POINT_NAMES}") from None
    if points.shape != (5, 2):
        raise InputError(f"{what} must be five (x, y) points ({_POINT_NAMES}), got an array of shape {points.shape}")
    if not np.isfinite(points).all():
        raise InputError(f"{what} contain values that are not finite numbers")
    eyes = points[1] - points[0]
    down = points[3:].mean(0) - points[:2].mean(0)
    if np.linalg.norm(eyes) < 1.0 or np.linalg.norm(down) < 1.0:
        raise InputError(f"{what} put both eyes, or the eyes and the mouth, on the same spot: give the five points "
                         f"{_POINT_NAMES}")
    _check_order(points, what)
    if photo is not None:
        low = points.min(0)
        high = points.max(0)
        if low[0] < 0 or low[1] < 0 or high[0] > photo.width or high[1] > photo.height:
            raise InputError(f"{what} lie outside {photo.label} ({photo.width}x{photo.height} pixels): give them in "
                             "pixels of this photo as it is shown (after its EXIF rotation), y counted down from "
                             "the top")
    scale, rotation, shift = _similarity(_TEMPLATE, points)
    x0, y0, x1, y1 = _TEMPLATE_BOX
    cx, cy = scale * (rotation @ np.array([(x0 + x1) / 2, (y0 + y1) / 2])) + shift
    half_w, half_h = scale * (x1 - x0) / 2, scale * (y1 - y0) / 2
    return DetectedFace(box=(cx - half_w, cy - half_h, cx + half_w, cy + half_h), points=points, score=1.0,
                        source="landmarks")


def _check_order(points: np.ndarray, what: str) -> None:
    """Mirrored orders (eyes or mouth corners swapped, or y counted up) would fit a mirrored head."""
    eyes = points[1] - points[0]
    mouth = points[4] - points[3]
    down = points[3:].mean(0) - points[:2].mean(0)
    hint = f"give them in the order {_POINT_NAMES}, with y counted down from the top of the photo"
    # In y-down pixels the eye vector turns clockwise onto the eyes-to-mouth vector: a positive cross product.
    sine = (eyes[0] * down[1] - eyes[1] * down[0]) / (np.linalg.norm(eyes) * np.linalg.norm(down))
    if sine < -0.5:
        raise InputError(f"{what} look mirrored (left and right swapped, or y counted up): {hint}")
    if np.linalg.norm(mouth) >= 1.0 and np.dot(eyes, mouth) / (np.linalg.norm(eyes) * np.linalg.norm(mouth)) < -0.5:
        raise InputError(f"{what} have the mouth corners in the opposite order of the eyes: {hint}")


def check_not_collinear(points: Any, what: str = "the landmarks") -> None:
    """Five points (y down, insightface order) on one line are no face: the mouth must lie off the eyes' line.

    The sine between the eye vector and the eyes-to-mouth vector is about 1 for any real face (turned,
    tilted or rolled); below 0.2 (12 degrees) the points are taken as a line.
    """
    points = np.asarray(points, dtype=np.float64).reshape(5, 2)
    eyes = points[1] - points[0]
    down = points[3:].mean(0) - points[:2].mean(0)
    lengths = np.linalg.norm(eyes) * np.linalg.norm(down)
    if lengths == 0 or abs(eyes[0] * down[1] - eyes[1] * down[0]) / lengths < 0.2:
        raise InputError(f"{what} lie (nearly) on one line: the mouth corners must be below the eyes; give the "
                         f"five points {_POINT_NAMES}")


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
    """Five-point sets (each (5, 2), pixels, y down) from a landmarks file, one per face, in file order.

    Accepted: JSON with a list of 5 (or 68) [x, y]; {"lm5": [...]} (also "kps", "landmarks",
    "points", or "lm68"); {"faces": [...]} or a list of such faces; the fixtures layout
    {image name: {"size": ..., "faces": [...]}}, where `image_name` picks the entry (needed when
    there are several). Plain text: 5 (or 68) lines "x y" (commas or tabs also separate; # comments).
    68 points (iBUG order) are reduced as the official ``extract_lm5_from_lm68``.
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
    return _five_points(rows, label)


def _five_points(value: Any, label: str) -> np.ndarray:
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{label}: points must be [x, y] pairs of numbers") from None
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] not in (5, 68):
        count = points.shape[0] if points.ndim >= 1 else 0
        raise InputError(f"{label} holds {count} points where five [x, y] are needed ({_POINT_NAMES}), "
                         "or 68 iBUG points")
    if not np.isfinite(points).all():
        raise InputError(f"{label} holds values that are not finite numbers")
    if points.shape[0] == 68:
        from uvidm_backend.geometry.align import extract_lm5_from_lm68

        points = extract_lm5_from_lm68(points)
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
                return _five_points(face[key], label)
        raise InputError(f"{label}: a face needs one of the keys {', '.join(_POINT_KEYS)} (found "
                         f"{', '.join(map(str, face)) or 'none'})")
    return _five_points(face, label)


def _faces_from_json(data: Any, label: str, image_name: str | None) -> list[np.ndarray]:
    if _is_point_list(data):
        return [_five_points(data, label)]
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
    """insightface's ``FaceAnalysis`` (``buffalo_l``, detection only), loaded at the first `detect`.

    `model_root` is insightface's root folder (``ModelPaths.insightface_root``: the model lies in
    ``<root>/models/buffalo_l``). Providers: CUDA when onnxruntime has it, else CPU, unless given.
    Nothing is ever downloaded here: a missing model raises `FaceDetectorMissing` naming
    ``uvidm weights download``.
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
                                        allowed_modules=["detection"], providers=providers)
                analysis.prepare(ctx_id=ctx_id, det_thresh=self.threshold,
                                 det_size=(self.detection_size, self.detection_size))
        except AssertionError:  # FaceAnalysis asserts it found a detection model
            raise self._model_missing(f"{self.model_dir} holds no face detection model", again=True) from None
        except Exception as error:  # onnxruntime's errors on damaged files have no common base class
            raise self._model_missing(f"the face detector in {self.model_dir} could not be loaded ({error})",
                                      again=True) from error
        if chatter.getvalue().strip():
            logger.debug("insightface: %s", chatter.getvalue().strip())
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
            if getattr(face, "kps", None) is None:
                logger.warning("the detector gave a face without its five points; skipped")
                continue
            faces.append(DetectedFace(box=tuple(np.asarray(face.bbox, dtype=np.float64)[:4]),
                                      points=np.asarray(face.kps, dtype=np.float64), score=float(face.det_score)))
        logger.debug("%d face(s) found in %s", len(faces), photo.label)
        return sort_left_to_right(faces)
