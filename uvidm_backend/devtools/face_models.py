"""Stand-ins for insightface's ``buffalo_l`` face models that find known faces in one photo, for tests.

``buffalo_l`` cannot be downloaded everywhere (CI has no route to insightface's release files), yet
the detection path should run for real: insightface's model router (``model_zoo.get_model``), its
SCRFD pre- and post-processing (resize, anchor decode, score threshold, NMS), its ``Landmark``
crop and back-transform, and our selection code. `write_face_models` writes, in the ``buffalo_l``
file layout, ONNX networks with the real models' signatures:

    det_10g.onnx   SCRFD: input ``input.1`` (1, 3, ?, ?); nine outputs, score (n, 1), box (n, 4) and
                   five key points (n, 10) for strides 8, 16 and 32 with two anchors per place.
                   The outputs are constants (added to 0 x the input) for a 640x640 detector input:
                   the given faces of one photo, plus a weaker duplicate of the first face (NMS
                   removes it) and a box below the score threshold.
    1k3d68.onnx    Landmark: input ``data`` (1, 3, 192, 192), output ``fc1`` (1, 3309): 1103 points
                   (x, y, z) in [-1, 1] of the crop, the last 68 the iBUG points. Computed from
                   the input: the crop's 4x4 mean colours pick the nearest stored face (each face's
                   crop as insightface cuts it) and its 68 points are returned.

The detector's five key points are the pupils (means of each eye's six points), nose tip and mouth
corners, as a real detector gives them, so they differ from ``extract_lm5_from_lm68``'s eye corners:
a test can tell which of the two the pipeline used. The other ``buffalo_l`` files (recognition,
gender and age, 106 points) are not written; our detector loads only these two tasks.

Command line: ``python -m uvidm_backend.devtools.face_models OUT_DIR PHOTO LANDMARKS_JSON``
(landmarks in the ``fixtures/landmarks.json`` layout).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

DETECTOR_FILE = "det_10g.onnx"
LANDMARK_FILE = "1k3d68.onnx"
DETECTOR_INPUT = 640  # FaceDetector's detection size: the constant outputs hold for this input only
STRIDES = (8, 16, 32)
ANCHORS = 2
LANDMARK_INPUT = 192
LANDMARK_POINTS = 1103  # 1k3d68's output rows; the last 68 are the iBUG points
FEATURE_GRID = 4  # the landmark network tells faces apart by their crop's 4x4 mean colours
OPSET = 17
# Names of the real networks' inputs and outputs (det_10g.onnx, 1k3d68.onnx of buffalo_l).
DETECTOR_INPUT_NAME = "input.1"
DETECTOR_OUTPUT_NAMES = ("448", "471", "494", "451", "474", "497", "454", "477", "500")
LANDMARK_INPUT_NAME = "data"
LANDMARK_OUTPUT_NAME = "fc1"


@dataclass(frozen=True, eq=False)
class KnownFace:
    """A face the stand-in models find: box (x0, y0, x1, y1) and 68 iBUG points (68, 2), photo pixels, y down."""

    box: tuple[float, float, float, float]
    lm68: np.ndarray
    score: float = 0.9

    def __post_init__(self) -> None:
        lm68 = np.array(self.lm68, dtype=np.float64).reshape(68, 2)
        lm68.flags.writeable = False
        object.__setattr__(self, "lm68", lm68)
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))

    @property
    def keypoints(self) -> np.ndarray:
        """The detector's five points: pupils (six-point means), nose tip, mouth corners (5, 2)."""
        lm = self.lm68
        return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def detector_scale(photo_size: tuple[int, int], input_size: int = DETECTOR_INPUT) -> float:
    """The factor SCRFD resizes the photo by to fit it into its square input (``_detect_candidates``)."""
    width, height = photo_size
    if height / width > 1.0:
        new_height = input_size
    else:
        new_height = int(input_size * (height / width))
    return new_height / height


def landmark_crop_matrix(box: Sequence[float], input_size: int = LANDMARK_INPUT) -> np.ndarray:
    """The 2x3 photo -> crop matrix of insightface's ``Landmark.get`` (box centre, side 1.5 x the box)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    scale = input_size / (max(x1 - x0, y1 - y0) * 1.5)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array([[scale, 0.0, input_size / 2 - cx * scale], [0.0, scale, input_size / 2 - cy * scale]])


def write_face_models(folder: str | Path, photo: np.ndarray, faces: Sequence[KnownFace], *,
                      landmarks: bool = True) -> Path:
    """Writes det_10g.onnx (and 1k3d68.onnx unless `landmarks` is False) into `folder`.

    `photo` is the (H, W, 3) uint8 RGB photo the faces are in (the landmark network stores each
    face's crop features). Returns `folder`.
    """
    import onnx  # test tooling only: the product reads these files through onnxruntime

    if not faces:
        raise ValueError("give at least one face")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    photo = np.asarray(photo)
    size = (photo.shape[1], photo.shape[0])
    boxes = [_decoded_box(face.box, size) for face in faces]
    _save(onnx, _detector_graph(onnx, faces, size), folder / DETECTOR_FILE)
    if landmarks:
        _save(onnx, _landmark_graph(onnx, photo, faces, boxes), folder / LANDMARK_FILE)
    log.info("stand-in face models for %d face(s) written to %s", len(faces), folder)
    return folder


def _save(onnx: Any, graph: Any, path: Path) -> None:
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)],
                                   producer_name="uvidm_backend.devtools.face_models")
    model.ir_version = 8
    onnx.checker.check_model(model)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(model.SerializeToString())
    partial.replace(path)


# -- the detector ---------------------------------------------------------------------------------


def _anchor(box: Sequence[float], scale: float) -> tuple[int, int]:
    """(stride index, anchor row) for a box: SCRFD's stride for its size, the anchor nearest its centre."""
    x0, y0, x1, y1 = (v * scale for v in box)
    side = max(x1 - x0, y1 - y0)
    level = 0 if side < 64 else 1 if side < 128 else 2
    stride = STRIDES[level]
    cells = DETECTOR_INPUT // stride
    col = min(cells - 1, max(0, round((x0 + x1) / 2 / stride)))
    row = min(cells - 1, max(0, round((y0 + y1) / 2 / stride)))
    return level, (row * cells + col) * ANCHORS


def _anchor_centre(level: int, index: int) -> np.ndarray:
    """The anchor's centre at the detector input (pixels), as SCRFD lays its anchors out."""
    stride = STRIDES[level]
    cells = DETECTOR_INPUT // stride
    return np.array([(index // ANCHORS) % cells, (index // ANCHORS) // cells], np.float32) * stride


def _decoded_box(box: Sequence[float], photo_size: tuple[int, int]) -> np.ndarray:
    """The box as insightface decodes it from our outputs (float32 arithmetic, back in photo pixels)."""
    scale = detector_scale(photo_size)
    level, index = _anchor(box, scale)
    stride = STRIDES[level]
    centre = _anchor_centre(level, index)
    distances = _box_distances(box, scale, centre, stride)
    x0, y0 = centre - distances[:2] * stride
    x1, y1 = centre + distances[2:] * stride
    return np.array([x0, y0, x1, y1], np.float32) / np.float32(scale)


def _box_distances(box: Sequence[float], scale: float, centre: np.ndarray, stride: int) -> np.ndarray:
    x0, y0, x1, y1 = (v * scale for v in box)
    return np.array([centre[0] - x0, centre[1] - y0, x1 - centre[0], y1 - centre[1]], np.float32) / stride


def _detector_outputs(faces: Sequence[KnownFace], photo_size: tuple[int, int]) -> list[np.ndarray]:
    scale = detector_scale(photo_size)
    scores, boxes, points = [], [], []
    for stride in STRIDES:
        count = (DETECTOR_INPUT // stride) ** 2 * ANCHORS
        scores.append(np.zeros((count, 1), np.float32))
        boxes.append(np.zeros((count, 4), np.float32))
        points.append(np.zeros((count, 10), np.float32))

    def place(box, keypoints, score, anchor_offset=0):
        level, index = _anchor(box, scale)
        index += anchor_offset
        stride = STRIDES[level]
        centre = _anchor_centre(level, index)
        if scores[level][index] > 0:
            raise ValueError(f"two faces fall on one detector anchor (box {list(box)}): give faces further apart")
        scores[level][index] = score
        boxes[level][index] = _box_distances(box, scale, centre, stride)
        points[level][index] = ((np.asarray(keypoints) * scale - centre) / stride).reshape(-1)

    for face in faces:
        place(face.box, face.keypoints, face.score)
    # A weaker, slightly shifted copy of the first face at its second anchor: NMS must drop it.
    first = faces[0]
    shift = 0.05 * (first.box[2] - first.box[0])
    place([v + shift for v in first.box], first.keypoints + shift, 0.6, anchor_offset=1)
    # A box below the default score threshold (0.5) in a corner of the photo.
    width, height = photo_size
    corner = (0.02 * width, 0.02 * height, 0.1 * width, 0.1 * height)
    place(corner, np.tile([[0.06 * width, 0.06 * height]], (5, 1)), 0.3)
    return scores + boxes + points


def _detector_graph(onnx: Any, faces: Sequence[KnownFace], photo_size: tuple[int, int]) -> Any:
    helper = onnx.helper
    outputs = _detector_outputs(faces, photo_size)
    nodes = [helper.make_node("ReduceMean", [DETECTOR_INPUT_NAME], ["input_mean"], keepdims=0),
             helper.make_node("Mul", ["input_mean", "zero"], ["nothing"])]
    initializers = [onnx.numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    values = []
    for name, array in zip(DETECTOR_OUTPUT_NAMES, outputs, strict=True):
        initializers.append(onnx.numpy_helper.from_array(array, f"{name}_value"))
        nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
        values.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [f"{name}_anchors", array.shape[1]]))
    image = helper.make_tensor_value_info(DETECTOR_INPUT_NAME, onnx.TensorProto.FLOAT, [1, 3, "?", "?"])
    return helper.make_graph(nodes, "scrfd_stand_in", [image], values, initializers)


# -- the 68-point model ---------------------------------------------------------------------------


def _crop_features(photo: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The 4x4 mean colours of the face's 192 crop as insightface's Landmark feeds it (RGB, 0..255)."""
    matrix = landmark_crop_matrix(box)
    crop = cv2.warpAffine(np.ascontiguousarray(photo), matrix, (LANDMARK_INPUT, LANDMARK_INPUT), borderValue=0.0)
    cell = LANDMARK_INPUT // FEATURE_GRID
    grid = crop.astype(np.float64).reshape(FEATURE_GRID, cell, FEATURE_GRID, cell, 3).mean((1, 3))
    return grid.transpose(2, 0, 1).reshape(-1)  # channel-major, as the network pools its NCHW input


def _landmark_rows(lm68: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The network output of one face: 1103 rows (x, y, z), the last 68 its points in [-1, 1] of the crop."""
    matrix = landmark_crop_matrix(box)
    crop = np.c_[lm68, np.ones(68)] @ matrix.T
    rows = np.zeros((LANDMARK_POINTS, 3), np.float32)
    rows[-68:, :2] = crop / (LANDMARK_INPUT // 2) - 1
    return rows.reshape(-1)


def _landmark_graph(onnx: Any, photo: np.ndarray, faces: Sequence[KnownFace], boxes: Sequence[np.ndarray]) -> Any:
    helper = onnx.helper
    features = np.stack([_crop_features(photo, box) for box in boxes]).astype(np.float32)
    table = np.stack([_landmark_rows(face.lm68, box) for face, box in zip(faces, boxes, strict=True)])
    cell = LANDMARK_INPUT // FEATURE_GRID
    nodes = [
        helper.make_node("AveragePool", [LANDMARK_INPUT_NAME], ["pooled"], kernel_shape=[cell, cell],
                         strides=[cell, cell]),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["feature"]),
        # Names insightface reads: a "_minus" and a "_mul" node mark an input taken as it is (mean 0, std 1).
        helper.make_node("Sub", ["feature", "known_features"], ["difference"], name="_minus_known"),
        helper.make_node("Mul", ["difference", "difference"], ["squared"], name="_mul_squared"),
        helper.make_node("ReduceSum", ["squared", "feature_axis"], ["distance"], keepdims=0),
        helper.make_node("ArgMin", ["distance"], ["nearest"], axis=0, keepdims=1),
        helper.make_node("Gather", ["known_landmarks", "nearest"], [LANDMARK_OUTPUT_NAME], axis=0),
    ]
    initializers = [
        onnx.numpy_helper.from_array(np.array([1, -1], np.int64), "flat_shape"),
        onnx.numpy_helper.from_array(features, "known_features"),
        onnx.numpy_helper.from_array(np.array([1], np.int64), "feature_axis"),
        onnx.numpy_helper.from_array(table.astype(np.float32), "known_landmarks"),
    ]
    image = helper.make_tensor_value_info(LANDMARK_INPUT_NAME, onnx.TensorProto.FLOAT,
                                          [None, 3, LANDMARK_INPUT, LANDMARK_INPUT])
    output = helper.make_tensor_value_info(LANDMARK_OUTPUT_NAME, onnx.TensorProto.FLOAT, [1, LANDMARK_POINTS * 3])
    return helper.make_graph(nodes, "landmark_3d_68_stand_in", [image], [output], initializers)


def known_faces(landmarks: dict, image_name: str) -> list[KnownFace]:
    """The faces of `image_name` in the ``fixtures/landmarks.json`` layout (``bbox`` and ``lm68`` of each)."""
    return [KnownFace(box=face["bbox"], lm68=face["lm68"], score=0.9 - 0.01 * number)
            for number, face in enumerate(landmarks[image_name]["faces"])]


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path, help="the buffalo_l folder to write")
    parser.add_argument("photo", type=Path)
    parser.add_argument("landmarks", type=Path, help="landmarks in the fixtures layout, with lm68 and bbox")
    args = parser.parse_args(argv)
    faces = known_faces(json.loads(args.landmarks.read_text()), args.photo.name)
    photo = np.asarray(Image.open(args.photo).convert("RGB"))
    print(write_face_models(args.out_dir, photo, faces))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
