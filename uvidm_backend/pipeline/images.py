"""Reading the user's photo: whatever Pillow can decode safely becomes one 8-bit RGB array.

The official code reads its inputs with ``PIL.Image.open(path).convert('RGB')`` (``ldm/data/base.py``)
and ignores EXIF orientation, colour profiles and the alpha channel's meaning. Users hand us phone
photos, cut-outs and scans, so this module does what a careful viewer does, and refuses with a
message that says what to do when it cannot:

* the type is sniffed from the content (Pillow's openers), never from the file name;
* the size is checked from the header before any pixel is decoded (decompression bombs);
* the EXIF orientation is applied (``ImageOps.exif_transpose``), so the face is upright as the
  photo is shown;
* greyscale, palette, CMYK and 16-bit images become 8-bit RGB; transparent pixels are composited
  on **white** (cut-outs usually come from a light background and a white surround is what the
  face parsing sees in studio portraits); a fully opaque alpha channel changes nothing;
* CMYK with an embedded ICC profile is converted through that profile to sRGB; RGB profiles
  (Display P3, Adobe RGB) are ignored like the official code does, so the colours it was trained
  on are what it sees.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from uvidm_backend.pipeline.errors import InputError

__all__ = ["MAX_FILE_BYTES", "MAX_PIXELS", "MIN_SIDE", "Photo", "load_photo", "readable_formats"]

logger = logging.getLogger(__name__)

MAX_PIXELS = 40_000_000  # a 40 MP phone photo; a face needs a small part of it
MIN_SIDE = 64  # pixels; below this there is no face to reconstruct
MAX_FILE_BYTES = 512 * 2**20

# Formats with a reliable signature and a Pillow decoder that needs no external program
# (EPS would start Ghostscript, WMF is a vector format, ...). HEIF joins when pillow-heif registers it.
_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "HEIF", "TIFF", "BMP", "GIF", "PPM", "JPEG2000")
_WHAT_TO_DO = "export it as JPEG or PNG"
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True, eq=False)
class Photo:
    """A decoded photo, upright, as 8-bit RGB; what the later stages read.

    ``pixels`` is read-only (H, W, 3) uint8 after the EXIF orientation; ``size`` and ``mode`` are
    the file's own (width, height) and Pillow mode before any conversion, ``orientation`` the EXIF
    orientation that was applied (1: none).
    """

    pixels: np.ndarray
    name: str | None
    format: str
    mode: str
    size: tuple[int, int]
    orientation: int
    sha256: str

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def label(self) -> str:
        """How messages name this photo."""
        return repr(self.name) if self.name else "the photo"


def readable_formats() -> tuple[str, ...]:
    """The Pillow formats load_photo accepts here (AVIF/HEIF depend on the Pillow build and plugins)."""
    Image.init()
    return tuple(name for name in _FORMATS if name in Image.OPEN)


def load_photo(source: bytes | str | Path, max_pixels: int = MAX_PIXELS) -> Photo:
    """Decodes a photo file (a path, or its bytes) into an upright 8-bit RGB `Photo`.

    Raises `InputError` with a message naming the file and what to do for missing, empty,
    unreadable, damaged, too large or too small images.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data, name = bytes(source), None
    else:
        path = Path(source).expanduser()
        data, name = _read_file(path), path.name
    label = repr(name) if name else "the photo"
    if not data:
        raise InputError(f"{label} is empty (0 bytes): {_WHAT_TO_DO} again")
    digest = hashlib.sha256(data).hexdigest()

    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; we refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=readable_formats())
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise InputError(f"{label} is too large to decode safely ({error}): scale it down to at most "
                             f"{max_pixels / 1e6:g} megapixels") from None
        except UnidentifiedImageError:
            raise InputError(_not_an_image(label, data)) from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:  # corrupt headers
            raise InputError(f"{label} is damaged or truncated ({error}): {_WHAT_TO_DO} again") from None
        with image:
            file_format, mode, size = image.format or "unknown", image.mode, image.size
            _check_size(label, size, max_pixels)
            try:
                image.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
                raise InputError(f"{label} is too large to decode safely ({error}): scale it down") from None
            except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as error:
                raise InputError(f"{label} is damaged or truncated ({error}): {_WHAT_TO_DO} again") from None
            orientation = _orientation(image, label)
            # Orientation 1 (also absent or unreadable): exif_transpose would only copy the pixels.
            upright = image if orientation == 1 else _exif_transpose(image, label)
            pixels = _to_rgb8(upright, label)

    pixels = np.ascontiguousarray(pixels)
    pixels.flags.writeable = False
    logger.debug("loaded %s: %s %s %dx%d, orientation %d", label, file_format, mode, *size, orientation)
    return Photo(pixels=pixels, name=name, format=file_format, mode=mode, size=(int(size[0]), int(size[1])),
                 orientation=orientation, sha256=digest)


def _read_file(path: Path) -> bytes:
    if not path.exists():
        raise InputError(f"photo {str(path)!r} not found: check the path")
    if not path.is_file():
        raise InputError(f"{str(path)!r} is not a file: give the path of a photo (JPEG, PNG, ...)")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"{path.name!r} is {size / 2**20:.0f} MiB, more than the {MAX_FILE_BYTES / 2**20:.0f} MiB "
                         f"a photo may have: {_WHAT_TO_DO} at a smaller size")
    try:
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"{str(path)!r} could not be read ({error.strerror or error})") from None


def _not_an_image(label: str, data: bytes) -> str:
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return (f"{label} is a HEIC/HEIF photo, which this installation cannot read: {_WHAT_TO_DO} "
                "(or `pip install pillow-heif`)")
    names = ", ".join(readable_formats())
    return f"{label} is not an image Pillow can read ({names}): {_WHAT_TO_DO}"


def _check_size(label: str, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise InputError(f"{label} is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), more than "
                         f"the {max_pixels / 1e6:g} megapixels allowed: scale it down (the face needs far fewer)")
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{label} is {width}x{height} pixels, too small: use a photo at least {MIN_SIDE} pixels "
                         "on each side, with the face well visible")


def _orientation(image: Image.Image, label: str) -> int:
    try:
        value = int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception as error:  # malformed EXIF blocks raise all sorts of errors; orientation is optional
        logger.warning("%s: EXIF orientation ignored (%s)", label, error)
        return 1
    return value if 1 <= value <= 8 else 1


def _exif_transpose(image: Image.Image, label: str) -> Image.Image:
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception as error:  # a broken EXIF block should not lose the photo
        logger.warning("%s: EXIF orientation ignored (%s)", label, error)
        return image
    return upright if upright is not None else image


def _to_rgb8(image: Image.Image, label: str) -> np.ndarray:
    """Any Pillow mode → (H, W, 3) uint8; see the module docstring for alpha and colour profiles."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image)
    if mode in ("I", "F") or mode.startswith("I;16"):
        return _high_depth_to_rgb8(image, label)
    if mode == "CMYK":
        return np.asarray(_cmyk_to_rgb(image))
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "L" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    try:
        return np.asarray(image.convert("RGB"))
    except (ValueError, OSError) as error:
        raise InputError(f"{label} uses the colour mode {mode}, which cannot be converted to RGB ({error}): "
                         f"{_WHAT_TO_DO}") from None


def _high_depth_to_rgb8(image: Image.Image, label: str) -> np.ndarray:
    """16-bit (and 32-bit integer) greyscale → 8-bit, value v ↦ round(v / 257) so 0..65535 maps onto 0..255.

    Pillow opens 16-bit greyscale PNG/TIFF as ``I;16*`` or ``I``; both are read as 16-bit samples,
    values outside 0..65535 clipped. Floating-point images (mode F) have no agreed range: refused.
    """
    if image.mode == "F":
        raise InputError(f"{label} holds floating-point pixels (mode F): {_WHAT_TO_DO} with 8 bits per channel")
    values = np.asarray(image).astype(np.float64)
    grey = np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    profile = image.info.get("icc_profile")
    if profile:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception as error:  # no littlecms, or a broken profile: the naive conversion still works
            logger.warning("CMYK colour profile not applied (%s)", error)
    return image.convert("RGB")
