"""Checks of a submission, done before a job exists: options (422 naming the field) and the photo.

Everything the pipeline would fail on minutes later is refused here: numbers that are not finite,
values out of the pipeline's ranges, landmarks that are no face (structure here, geometry in
`pipeline.faces`), a face index the given landmarks cannot have, and photos that are not images,
damaged, too large to decode within the memory budget, or too narrow to render.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from uvidm_backend.errors import UVIDMError
from uvidm_backend.pipeline.errors import InputError
from uvidm_backend.pipeline.faces import check_landmarks as check_landmark_geometry
from uvidm_backend.pipeline.images import Photo, load_photo, readable_formats
from uvidm_backend.pipeline.options import GenerateOptions
from uvidm_backend.service.limits import BudgetBusy, DecodeBudget, OverBudget

SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes 64 bits
LANDMARKS_MAX_CHARS = 16 * 1024  # 68 points with plenty of digits and spaces fit in 4 KB
LANDMARK_COUNTS = (5, 68)  # insightface's five, or the 68 iBUG points
MAX_ASPECT = 16  # longer side / shorter side: the preview of a narrower photo would have no pixels
DECODE_WAIT_S = 30.0
# Pillow format → extension of the stored upload (the format is sniffed from the content, never the name).
PHOTO_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "AVIF": "avif", "HEIF": "heic",
                    "TIFF": "tif", "BMP": "bmp", "GIF": "gif", "PPM": "ppm", "JPEG2000": "jp2"}
_PLAIN_MODES = ("1", "L", "RGB", "YCbCr", "CMYK")  # decoded once and copied once; others convert more


class OptionError(Exception):
    """An option the pipeline cannot use; `field` is the form field's name."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


class PhotoRejected(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        self.status = status
        self.headers = headers
        super().__init__(message)


@dataclass(frozen=True)
class CheckedPhoto:
    photo: Photo
    extension: str


# -- options --------------------------------------------------------------------------------------------
def parse_landmarks(text: str | None) -> np.ndarray | None:
    """The `landmarks` field: JSON, five (or 68) [x, y] finite numbers → (n, 2) float64; None when empty."""
    if text is None or not text.strip():
        return None
    hint = "give JSON like [[x, y], ...]: five points in photo pixels (eyes, nose tip, mouth corners), or 68"
    if len(text) > LANDMARKS_MAX_CHARS:
        raise OptionError("landmarks", f"landmarks are {len(text)} characters, more than {LANDMARKS_MAX_CHARS}: {hint}")
    if _nesting(text) > 2:
        raise OptionError("landmarks", f"landmarks are nested deeper than a list of [x, y] pairs: {hint}")
    try:
        points = json.loads(text, parse_constant=_not_finite, parse_float=_finite_float)
    except ValueError as error:
        raise OptionError("landmarks", f"landmarks are not valid JSON of finite numbers ({error}): {hint}") from None
    if not isinstance(points, list) or len(points) not in LANDMARK_COUNTS:
        count = f"{len(points)} entries" if isinstance(points, list) else f"a {type(points).__name__}"
        raise OptionError("landmarks", f"landmarks hold {count}: {hint}")
    for number, point in enumerate(points):
        if not (isinstance(point, list) and len(point) == 2 and all(_is_finite_number(v) for v in point)):
            raise OptionError("landmarks", f"landmark {number} is {json.dumps(point)[:40]}, not [x, y] with two "
                                           f"finite numbers: {hint}")
    return np.asarray(points, dtype=np.float64)


def _nesting(text: str) -> int:
    """The deepest bracket nesting (strings counted too: no string belongs in landmarks anyway)."""
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _not_finite(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer too large for a float
        return False


def generate_options(given: dict[str, Any], landmarks: np.ndarray | None) -> GenerateOptions:
    """GenerateOptions from the form's fields (None: not given); an OptionError names the field at fault."""
    chosen = {key: value for key, value in given.items() if value is not None}
    seed = chosen.get("seed")
    if seed is not None and not 0 <= seed <= SEED_MAX:
        raise OptionError("seed", f"seed must be between 0 and {SEED_MAX} (got {seed})")
    if landmarks is not None:
        face_index = chosen.get("face_index")
        if face_index not in (None, 0):
            raise OptionError("face_index", f"face_index is {face_index}, but the landmarks give one face (index 0): "
                                            "leave face_index out, or send the landmarks of the face you mean")
        chosen["landmarks"] = tuple((float(x), float(y)) for x, y in landmarks)  # 5 or 68, as given
    try:
        return GenerateOptions(**chosen)
    except InputError as error:  # its messages name the option in words: "texture size must be ..."
        field = next((key for key in chosen if key.replace("_", " ") in str(error)), "options")
        raise OptionError(field, str(error)) from None


def check_face_index(options: GenerateOptions, photo: Photo, runner: object | None) -> None:
    """A face_index beyond the faces the detector finds in the photo: refused now, not when the job runs.
    Only when the models are loaded (the detector is theirs); a job queued while they load checks it itself."""
    detector = getattr(runner, "detector", None)
    if options.face_index is None or options.landmarks is not None or detector is None:
        return
    try:
        count = len(detector.detect(photo))
    except UVIDMError:  # no detector files: the job says so in its own words
        return
    if options.face_index >= count:
        send = f"send 0 to {count - 1} (left to right)" if count else "send a photo with a face, or landmarks"
        raise OptionError("face_index", f"face_index is {options.face_index}, but the detector finds {count} "
                                        f"face(s) in this photo: {send}")


def check_landmarks(options: GenerateOptions, photo: Photo | None = None) -> None:
    """The landmarks' geometry (pipeline.faces): distinct, off one line, in order, inside the photo."""
    if options.landmarks is None:
        return
    try:
        check_landmark_geometry(options.landmarks, photo)
    except InputError as error:
        raise OptionError("landmarks", str(error)) from None


# -- the photo ------------------------------------------------------------------------------------------
def decode_cost(width: int, height: int, mode: str) -> int:
    """Bytes the decode check may hold at its peak: the decoded image and its RGB copy, more for modes
    that convert through RGBA (alpha on white) or 16 bits."""
    return width * height * (8 if mode in _PLAIN_MODES else 24)


def check_photo(data: bytes, max_pixels: int, budget: DecodeBudget) -> CheckedPhoto:
    """Refuses now, with a status, what the job would fail on minutes later: the type is sniffed from the
    content and the size read from the header before any pixel is decoded; then the photo loader decodes
    it (truncated files, odd modes) within the decode budget."""
    if not data:
        raise PhotoRejected(400, "the photo is empty (0 bytes): choose the image file again")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=readable_formats()) as image:
                width, height = image.size
                kind, mode = image.format or "", image.mode
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise PhotoRejected(413, f"the photo has too many pixels ({error}): scale it down to at most "
                                     f"{max_pixels / 1e6:g} megapixels") from None
        except UnidentifiedImageError:
            raise PhotoRejected(415, _loader_message(data)) from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise PhotoRejected(400, f"the photo is damaged or truncated ({error}): export it again") from None
    if width * height > max_pixels:
        raise PhotoRejected(413, f"the photo is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), "
                                 f"more than the {max_pixels / 1e6:g} megapixels allowed: scale it down")
    if max(width, height) > MAX_ASPECT * max(1, min(width, height)):
        raise PhotoRejected(400, f"the photo is {width}x{height} pixels, more than {MAX_ASPECT} times as long as it "
                                 "is wide: crop it around the face")
    cost = decode_cost(width, height, mode)
    try:
        with budget.hold(cost, DECODE_WAIT_S):
            photo = load_photo(data, max_pixels=max_pixels)
    except OverBudget:
        raise PhotoRejected(413, f"the photo ({width}x{height} pixels, {mode}) needs about {cost / 2**20:.0f} MB to "
                                 f"decode, more than this service allows ({budget.total_bytes / 2**20:.0f} MB): "
                                 "scale it down or save it as an RGB JPEG") from None
    except BudgetBusy:
        raise PhotoRejected(503, "the service is busy decoding other photos: try again in a few seconds",
                            {"Retry-After": "5"}) from None
    except InputError as error:
        raise PhotoRejected(400, str(error)) from None
    return CheckedPhoto(photo, PHOTO_EXTENSIONS.get(kind, kind.lower() or "img"))


def _loader_message(data: bytes) -> str:
    """The photo loader's words for a file it cannot read (it knows HEIC and the formats installed)."""
    try:
        load_photo(data[:4096])  # the signature is all it looks at before refusing
    except InputError as error:
        return str(error)
    return "the upload is not an image this service reads: choose a photo file (JPEG or PNG)"
