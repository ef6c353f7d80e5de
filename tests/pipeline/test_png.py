"""The parallel PNG encoder, checked by real decoders (Pillow, OpenCV's libpng, zlib)."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from uvidm_backend.pipeline import png
from uvidm_backend.pipeline.png import encode_png


def photo_like(height: int, width: int, channels: int | None, seed: int = 0) -> np.ndarray:
    """Smooth gradients with noise on top, rows repeating in places: what textures look like, and
    back-references that reach across band boundaries."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    shape = (height, width) if channels is None else (height, width, channels)
    base = (x[..., None] * 0.7 + y[..., None] * 0.3 + np.arange(channels or 1) * 40) % 256
    pixels = (base.reshape(shape) + rng.integers(0, 6, shape)).astype(np.uint8)
    pixels[height // 2:height // 2 + 4] = pixels[:4] if height >= 8 else pixels[height // 2:height // 2 + 4]
    return pixels


def decode_pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        image.verify()  # chunk CRCs and structure
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def decode_cv2(data: bytes) -> np.ndarray:
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None, "OpenCV could not decode the PNG"
    if decoded.ndim == 3:  # OpenCV's channel order is BGR(A)
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB if decoded.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return decoded


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    found, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset:offset + 4])
        kind, body = data[offset + 4:offset + 8], data[offset + 8:offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        found.append((kind, body))
        offset += 12 + length
    return found


@pytest.mark.parametrize("channels, mode", [(None, "L"), (3, "RGB"), (4, "RGBA")])
@pytest.mark.parametrize("size", [(1, 1), (3, 1000), (1000, 3), (1025, 777)])
@pytest.mark.parametrize("threads", [1, 4])
def test_round_trip_exact_in_pillow_and_opencv(channels, mode, size, threads):
    pixels = photo_like(*size, channels)
    data = encode_png(pixels, threads=threads)
    for decode in (decode_pillow, decode_cv2):
        np.testing.assert_array_equal(decode(data), pixels)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == mode and image.size == (size[1], size[0])


@pytest.mark.parametrize("level", list(png.LEVELS))
@pytest.mark.parametrize("size", [(1, 1), (7, 5), (300, 200), (1025, 777)])
def test_many_small_bands_at_every_level(monkeypatch, level, size):
    """Bands of a few rows, and of a single row: each band's dictionary spans several rows before it."""
    monkeypatch.setattr(png, "MIN_BAND_BYTES", 1)
    pixels = photo_like(*size, 3, seed=level)
    for threads in (2, 7, size[0]):
        data = encode_png(pixels, level=level, threads=threads)
        idat = [body for kind, body in chunks(data) if kind == b"IDAT"]
        assert len(idat) == min(threads, size[0])
        np.testing.assert_array_equal(decode_pillow(data), pixels)
        np.testing.assert_array_equal(decode_cv2(data), pixels)
        filtered = zlib.decompress(b"".join(idat))  # checks the Adler-32 of the whole stream
        assert len(filtered) == size[0] * (size[1] * 3 + 1)


def test_bands_cost_almost_no_size():
    pixels = photo_like(1024, 1024, 3)
    one = encode_png(pixels, threads=1)
    eight = encode_png(pixels, threads=8)
    assert len([kind for kind, _ in chunks(eight) if kind == b"IDAT"]) == 8
    assert len(eight) < len(one) * 1.01


def test_compresses_like_pillow_level_1():
    pixels = photo_like(512, 512, 3)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    assert len(encode_png(pixels)) < len(buffer.getvalue()) * 1.3


def test_zlib_header_is_what_zlib_writes_at_its_fastest():
    assert png.ZLIB_HEADER == zlib.compress(b"", 1)[:2]


def test_adler32_combine_matches_zlib():
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    for cut in (0, 1, 5551, 65521, 65522, 150_000, len(data)):
        first, second = data[:cut], data[cut:]
        assert png._adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second)) == zlib.adler32(data)


@pytest.mark.parametrize("cut", [12, 13, 40, 400, 20_000])
def test_truncated_file_is_detected(cut):
    data = encode_png(photo_like(200, 300, 3), threads=4)
    with pytest.raises((OSError, SyntaxError, struct.error)):
        with Image.open(io.BytesIO(data[:-cut])) as image:
            image.verify()


def test_corrupted_byte_is_detected():
    data = bytearray(encode_png(photo_like(200, 300, 3), threads=4))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises((OSError, SyntaxError)):
        with Image.open(io.BytesIO(bytes(data))) as image:
            image.verify()


@pytest.mark.parametrize("pixels", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8),
                                    np.zeros((4, 4, 1), np.uint8), np.zeros((0, 4, 3), np.uint8),
                                    np.zeros(4, np.uint8)])
def test_refuses_what_png_cannot_hold(pixels):
    with pytest.raises(ValueError):
        encode_png(pixels)


def test_refuses_unknown_levels():
    with pytest.raises(ValueError):
        encode_png(np.zeros((4, 4), np.uint8), level=png.LEVELS.stop)


def test_strided_input_is_encoded_as_seen():
    pixels = photo_like(64, 80, 4)[:, ::2, :3]  # not contiguous
    np.testing.assert_array_equal(decode_pillow(encode_png(pixels)), pixels)
