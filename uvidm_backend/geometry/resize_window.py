"""One window of a Pillow bicubic resize, bit-identical, without resizing the rest of the image.

The alignment crop is a 224² window of the whole photo resized by the alignment scale; resizing
all of a photo to keep 224² pixels of it was most of the face stage (30 ms for 1280x886).

Pillow resizes in two passes, one per axis, rounding to 8 bits in between. Each pass takes its
filter coefficients from the input and output length of its own axis only, and every output pixel
reads a fixed run of input pixels along that axis. So the window comes out the same when the first
pass runs on only the source lines the window reads (at full length along the resized axis), and
the second pass on only the window's part of that, placed in a frame of full length whose other
lines stay black (the window never reads them). Each step is a plain `Image.resize` that leaves the
other axis alone, so Pillow runs just that pass. The work drops from width x height to about
window x (width + height) pixels.
"""

from __future__ import annotations

import math

import numpy as np
import PIL
from PIL import Image

__all__ = ["resized_window"]

BICUBIC_SUPPORT = 2.0  # Pillow's bicubic filter reaches 2 pixels either side (more when shrinking)
# Pillow 13 starts with the vertical pass when the height shrinks by more than twice what the width
# does (ImagingResampleInner); earlier versions always start with the horizontal one.
PILLOW_PICKS_PASS_ORDER = int(PIL.__version__.split(".")[0]) >= 13


def resized_window(image: Image.Image | np.ndarray, size: tuple[int, int],
                   window: tuple[int, int, int, int]) -> np.ndarray:
    """``np.asarray(image.resize(size, Image.BICUBIC).crop(window))``, computing only the window.

    ``image``: a PIL image in mode L or RGB, or an (H, W) / (H, W, 3) uint8 array; ``size`` (w, h);
    ``window`` (left, top, right, bottom) in the resized image, which may reach past its edges: those
    pixels are black, as `Image.crop` makes them.
    """
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB"):
            raise ValueError(f"resized_window takes L or RGB images (got mode {image.mode})")
        source_size, grey = image.size, image.mode == "L"
    else:
        source_size, grey = (image.shape[1], image.shape[0]), image.ndim == 2
    width, height = size
    left, top, right, bottom = window
    out = np.zeros((bottom - top, right - left) + (() if grey else (3,)), np.uint8)
    x0, x1 = max(left, 0), min(right, width)
    y0, y1 = max(top, 0), min(bottom, height)
    if x0 >= x1 or y0 >= y1:
        return out
    if _vertical_first(source_size, size):
        part = _vertical_then_horizontal(image, source_size, size, (x0, y0, x1, y1))
    else:
        part = _horizontal_then_vertical(image, source_size, size, (x0, y0, x1, y1))
    out[y0 - top:y1 - top, x0 - left:x1 - left] = np.asarray(part)
    return out


def _vertical_first(source_size: tuple[int, int], size: tuple[int, int]) -> bool:
    shrink_x, shrink_y = source_size[0] - size[0], source_size[1] - size[1]
    return PILLOW_PICKS_PASS_ORDER and 0 < shrink_y and shrink_y > 2 * shrink_x


def _horizontal_then_vertical(image, source_size, size, box) -> Image.Image:
    (source_width, source_height), (width, height), (x0, y0, x1, y1) = source_size, size, box
    first, last = _source_span(y0, y1, source_height, height)
    rows = _source_part(image, (0, first, source_width, last))
    rows = rows.resize((width, last - first), Image.BICUBIC)
    frame = Image.new(rows.mode, (x1 - x0, source_height))
    frame.paste(rows.crop((x0, 0, x1, last - first)), (0, first))
    return frame.resize((x1 - x0, height), Image.BICUBIC).crop((0, y0, x1 - x0, y1))


def _vertical_then_horizontal(image, source_size, size, box) -> Image.Image:
    (source_width, source_height), (width, height), (x0, y0, x1, y1) = source_size, size, box
    first, last = _source_span(x0, x1, source_width, width)
    columns = _source_part(image, (first, 0, last, source_height))
    columns = columns.resize((last - first, height), Image.BICUBIC)
    frame = Image.new(columns.mode, (source_width, y1 - y0))
    frame.paste(columns.crop((0, y0, last - first, y1)), (first, 0))
    return frame.resize((width, y1 - y0), Image.BICUBIC).crop((x0, 0, x1, y1 - y0))


def _source_part(image: Image.Image | np.ndarray, box: tuple[int, int, int, int]) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.crop(box)
    left, top, right, bottom = box
    return Image.fromarray(np.ascontiguousarray(image[top:bottom, left:right]))


def _source_span(start: int, stop: int, source_length: int, length: int) -> tuple[int, int]:
    """Source lines [first, last) that resized lines [start, stop) read, with a line to spare each
    side (reading more lines than needed changes nothing; fewer would)."""
    scale = source_length / length
    support = BICUBIC_SUPPORT * max(scale, 1.0)
    first = math.floor((start + 0.5) * scale - support) - 1
    last = math.ceil((stop - 0.5) * scale + support) + 1
    return max(first, 0), min(last, source_length)
