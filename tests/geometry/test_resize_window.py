"""A window of a Pillow bicubic resize equals the same window of the whole resized image, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from uvidm_backend.geometry import resize_window
from uvidm_backend.geometry.resize_window import resized_window


def whole_then_crop(image: np.ndarray, size: tuple[int, int], window: tuple[int, int, int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC).crop(window))


def random_case(rng: np.random.Generator, grey: bool) -> tuple[np.ndarray, tuple[int, int], tuple[int, ...]]:
    height, width = (int(v) for v in rng.integers(8, 400, 2))
    shape = (height, width) if grey else (height, width, 3)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    scale = float(np.exp(rng.uniform(np.log(0.15), np.log(3.0))))
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    side = int(rng.integers(1, 260))
    left, top = int(rng.integers(-side - 3, size[0] + 3)), int(rng.integers(-side - 3, size[1] + 3))
    return image, size, (left, top, left + side, top + side)


@pytest.mark.parametrize("seed", range(6))
def test_random_windows_match_the_whole_resize(seed):
    rng = np.random.default_rng(seed)
    for case in range(40):
        image, size, window = random_case(rng, grey=case % 4 == 0)
        expected = whole_then_crop(image, size, window)
        for source in (image, Image.fromarray(image)):
            got = resized_window(source, size, window)
            assert got.dtype == np.uint8 and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected, err_msg=f"{image.shape} -> {size}, window {window}")


@pytest.mark.parametrize("source, size", [
    ((300, 100), (90, 120)),  # the height shrinks much more than the width: Pillow 13 starts vertically
    ((100, 300), (120, 90)),
    ((886, 1280), (1840, 1274)),  # t1.jpg enlarged, as the alignment of a small face does
    ((886, 1280), (1279, 885)),  # a hair smaller: both axes shrink by about a pixel
    ((500, 400), (400, 500)),
    ((64, 64), (64, 64)),  # same size: Pillow copies
])
def test_both_pass_orders_and_edge_sizes(source, size):
    image = np.random.default_rng(1).integers(0, 256, (*source, 3), dtype=np.uint8)
    for window in [(-50, -50, 174, 174), (size[0] - 100, size[1] - 100, size[0] + 124, size[1] + 124),
                   (size[0] // 3, size[1] // 3, size[0] // 3 + 224, size[1] // 3 + 224)]:
        np.testing.assert_array_equal(resized_window(image, size, window), whole_then_crop(image, size, window))


def test_pass_order_follows_pillow():
    assert resize_window._vertical_first((100, 300), (90, 120)) == resize_window.PILLOW_PICKS_PASS_ORDER
    assert not resize_window._vertical_first((300, 100), (120, 90))
    assert not resize_window._vertical_first((100, 100), (200, 200))


def test_window_outside_the_image_is_black():
    image = np.full((50, 40, 3), 200, np.uint8)
    np.testing.assert_array_equal(resized_window(image, (80, 100), (100, 0, 120, 20)), np.zeros((20, 20, 3)))
    np.testing.assert_array_equal(resized_window(image, (80, 100), (-30, -30, -10, -10)), np.zeros((20, 20, 3)))


def test_refuses_modes_it_cannot_reproduce():
    with pytest.raises(ValueError):
        resized_window(Image.new("RGBA", (10, 10)), (20, 20), (0, 0, 5, 5))
