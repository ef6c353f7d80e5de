"""The CPU stages before the networks: the photo decoded, its face found, the face aligned.

Each photo on its own (threads may run several at once: decoding, detection and alignment release the
GIL for much of their time); the result is what the networks' stages take, batched.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from uvidm_backend.geometry.align import Alignment, align_face
from uvidm_backend.photo_groups import PhotoGroups, upload_stacked
from uvidm_backend.pipeline.faces import DetectedFace, FaceDetector, face_from_landmarks, select_face
from uvidm_backend.pipeline.images import Photo, load_photo
from uvidm_backend.pipeline.options import GenerateOptions


@dataclass(frozen=True, eq=False)
class PreparedPhoto:
    """A photo ready for the networks: its face and the official alignment."""

    photo: Photo
    face: DetectedFace
    face_index: int | None
    alignment: Alignment
    options: GenerateOptions
    timings: dict[str, float] = field(default_factory=dict)  # "photo", "face" (seconds)

    def trans_params(self) -> Tensor:
        """(1, 6) float32: visualize.py casts trans_params to float32 before they reach the model (trap 5)."""
        return torch.from_numpy(np.asarray(self.alignment.trans_params, dtype=np.float32))[None]


def crops_m11(items: Sequence[PreparedPhoto], device: torch.device | str) -> Tensor:
    """(B, 3, 224, 224) the aligned crops in [-1, 1] on `device`: sent as bytes, converted there exactly as
    `Alignment.model_input` converts them (float32(x) / 127.5 - 1, correctly rounded on both)."""
    crops = upload_stacked([item.alignment.crop for item in items], device)
    return crops.permute(0, 3, 1, 2).float() / 127.5 - 1


def photos_m11(items: Sequence[PreparedPhoto], device: torch.device | str) -> PhotoGroups:
    """The whole photos in [-1, 1] on `device`, grouped by size (`PhotoGroups.from_pixels`)."""
    return PhotoGroups.from_pixels([item.photo.pixels for item in items], device)


def find_face(photo: Photo, options: GenerateOptions, detector: FaceDetector) -> tuple[DetectedFace, int | None]:
    """The face `options` asks for: given landmarks, or the detected face (`face_index`, else the largest)."""
    if options.landmarks is not None:
        return face_from_landmarks(np.asarray(options.landmarks, dtype=np.float32), photo), options.face_index
    faces = detector.detect(photo)
    face = select_face(faces, options.face_index, photo=photo)
    return face, faces.index(face)


def align(photo: Photo, options: GenerateOptions, detector: FaceDetector, lm3d_5: np.ndarray,
          photo_seconds: float = 0.0) -> PreparedPhoto:
    """The face stage: `find_face`, then the official five-point alignment."""
    started = time.perf_counter()
    face, face_index = find_face(photo, options, detector)
    alignment = align_face(photo.pixels, face.official_lm5(photo.height), lm3d_5)
    return PreparedPhoto(photo, face, face_index, alignment, options,
                         {"photo": round(photo_seconds, 4), "face": round(time.perf_counter() - started, 4)})


def prepare_photo(source: bytes | str | Path, options: GenerateOptions, detector: FaceDetector,
                  lm3d_5: np.ndarray) -> PreparedPhoto:
    """Decoding, face finding and alignment of one photo (raises `UVIDMError`s that say what is wrong)."""
    started = time.perf_counter()
    photo = load_photo(source)
    return align(photo, options, detector, lm3d_5, time.perf_counter() - started)
