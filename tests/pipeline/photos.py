"""Photos for the pipeline tests: odd and broken image files written on the fly, and the sample
photos that ship with insightface (with their landmarks from the shared fixtures)."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]


def fixtures_dir() -> Path:
    return Path(os.environ.get("UVIDM_FIXTURES_DIR", REPO_ROOT.parent / "shared" / "fixtures"))


def fixture_landmarks() -> dict:
    """landmarks.json of the shared fixtures (skips the test when absent)."""
    path = fixtures_dir() / "landmarks.json"
    if not path.is_file():
        pytest.skip(f"landmarks fixture not found in {fixtures_dir()} (set UVIDM_FIXTURES_DIR)")
    return json.loads(path.read_text())


def sample_photo(name: str) -> Path:
    """A sample image of the insightface package (t1.jpg, Tom_Hanks_54745.png); skips without it.

    `UVIDM_SAMPLE_PHOTOS_DIR` names a folder holding copies of them, for machines without insightface.
    """
    copies = os.environ.get("UVIDM_SAMPLE_PHOTOS_DIR")
    if copies and (Path(copies) / name).is_file():
        return Path(copies) / name
    spec = importlib.util.find_spec("insightface")
    if spec is None or spec.origin is None:
        pytest.skip("insightface is not installed (its sample photos are needed)")
    path = Path(spec.origin).parent / "data" / "images" / name
    if not path.is_file():
        pytest.skip(f"insightface sample photo {name} not found at {path}")
    return path


def encode(image: Image.Image, format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **params)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def quadrants(width: int = 120, height: int = 80) -> np.ndarray:
    """An RGB test card: red top-left, green top-right, blue bottom-left, white bottom-right."""
    card = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    card[:h, :w] = (255, 0, 0)
    card[:h, w:] = (0, 255, 0)
    card[h:, :w] = (0, 0, 255)
    card[h:, w:] = (255, 255, 255)
    return card


def quadrant_colours(pixels: np.ndarray) -> list[tuple[int, ...]]:
    """Mean colour of the centre of each quadrant (top-left, top-right, bottom-left, bottom-right)."""
    height, width = pixels.shape[:2]
    out = []
    for row in (height // 4, 3 * height // 4):
        for col in (width // 4, 3 * width // 4):
            patch = pixels[row - 4:row + 4, col - 4:col + 4].reshape(-1, 3).astype(np.float64)
            out.append(tuple(int(round(v)) for v in patch.mean(0)))
    return out


def exif_jpeg(pixels: np.ndarray, orientation: int) -> bytes:
    """A JPEG of `pixels` as stored, with an EXIF orientation tag telling viewers how to turn it."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes())


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels, with a few bytes of image data behind it:
    a decompression bomb as far as its header goes (decoding it would also fail)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def heic_like() -> bytes:
    """The opening of an iPhone HEIC file (ISO-BMFF 'ftyp' box, brand heic), which Pillow cannot read."""
    return struct.pack(">I", 24) + b"ftypheic" + struct.pack(">I", 0) + b"mif1heic" + b"\x00" * 64
