"""Building the textures: the official colour match, the photo blend, delighting, the front-face region."""

import numpy as np
import pytest
import torch
from geometry.official_color import official_match_color_in_yuv
from PIL import Image

from uvidm_backend.pipeline import texture


def official_matched_texture(generated, baseline, front_mask):
    """visualize.py's chain from float32 HWC arrays in [0, 1]: the match, /255, written as `(x*255.).astype(uint8)`."""
    x_sample = official_match_color_in_yuv(baseline * 255.0, generated * 255.0, front_mask) / 255.0
    return x_sample, (x_sample * 255.0).astype(np.uint8)


def chw(image):
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]


def random_textures(size=64, seed=0):
    rng = np.random.default_rng(seed)
    generated = np.clip(0.45 + 0.15 * rng.standard_normal((size, size, 3)) + [0.1, 0.0, -0.1], 0, 1)
    baseline = np.clip(0.6 + 0.08 * rng.standard_normal((size, size, 3)) + [0.15, 0.0, -0.05], 0, 1)
    return generated.astype(np.float32), baseline.astype(np.float32)


def test_match_to_baseline_is_the_official_colour_match():
    generated, baseline = random_textures()
    mask_image = np.zeros((64, 64, 3), np.uint8)
    mask_image[12:50, 16:44] = 255
    front = texture.official_front_mask(mask_image, 64)
    expected, expected_png = official_matched_texture(generated, baseline, mask_image.astype(np.float32) / 255)

    matched = texture.match_to_baseline(chw(generated), chw(baseline), front)
    np.testing.assert_allclose(matched[0].permute(1, 2, 0).numpy(), expected, atol=2e-6)
    written = texture.official_uint8_image(matched)
    assert written.dtype == np.uint8
    # truncation as the official writer; float32 sums in another order may move a value across an integer
    differs = written != expected_png
    assert np.abs(written.astype(int) - expected_png).max() <= 1 and differs.mean() < 1e-3


def test_the_official_front_mask_is_read_as_visualize_reads_masktopo_front_png(tmp_path):
    rng = np.random.default_rng(3)
    drawn = (rng.random((300, 300)) > 0.5).astype(np.uint8) * 255
    drawn = np.repeat(drawn[..., None], 3, axis=-1)
    Image.fromarray(drawn).save(tmp_path / "front.png")
    # read_img('masktopo/front.png', resize=(256, 256), dst_range=1.) then mask[:, :, 0] > 0.5
    official = np.asarray(Image.open(tmp_path / "front.png").resize((256, 256)), np.float32) * (1 / 255.0)
    mask = texture.official_front_mask(np.asarray(Image.open(tmp_path / "front.png")), 256)
    np.testing.assert_array_equal(mask[0, 0].numpy(), (official[:, :, 0] > 0.5).astype(np.float32))


def disc(size, radius, centre=None):
    centre = (size / 2, size / 2) if centre is None else centre
    rows, cols = np.mgrid[:size, :size]
    inside = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < radius**2
    return torch.from_numpy(inside.astype(np.float32))[None, None]


def noisy(size, colour, seed, amplitude=0.03):
    rng = np.random.default_rng(seed)
    values = np.asarray(colour)[:, None, None] + amplitude * rng.standard_normal((3, size, size))
    return torch.from_numpy(values.astype(np.float32))[None].clamp(0, 1)


def boundary_step(albedo, mask):
    """Seam error: mean |difference| (8-bit levels) between 4-neighbours on either side of the mask's edge."""
    inside = mask[0, 0] > 0.5
    steps = []
    for dim in (0, 1):
        a, b = inside.narrow(dim, 0, inside.shape[dim] - 1), inside.narrow(dim, 1, inside.shape[dim] - 1)
        across = a != b
        image = albedo[0]
        first = image.narrow(dim + 1, 0, image.shape[dim + 1] - 1)
        second = image.narrow(dim + 1, 1, image.shape[dim + 1] - 1)
        steps.append((first - second).abs().amax(0)[across])
    return float(torch.cat(steps).mean()) * 255


def test_blend_keeps_the_generated_texture_outside_and_the_photo_inside_without_a_seam():
    size = 256
    generated = noisy(size, (0.35, 0.30, 0.30), seed=1)
    photo = noisy(size, (0.75, 0.55, 0.45), seed=2)  # far from the generated colours: no match hides the join
    mask = disc(size, 70)
    albedo = texture.blend_photo(generated, photo * mask, mask)
    outside = mask[0, 0] == 0
    torch.testing.assert_close(albedo[0][:, outside], generated[0][:, outside], atol=0, rtol=0)
    deep = disc(size, 70 - 2 * 1.5 * round(size * texture.COLOUR_WIDTH))[0, 0] > 0
    torch.testing.assert_close(albedo[0][:, deep], photo[0][:, deep], atol=1e-6, rtol=0)

    pasted = torch.where(mask > 0, photo, generated)
    natural = boundary_step(generated, disc(size, 40, (60, 60)))  # the texture's own neighbour steps
    assert boundary_step(pasted, mask) > 80  # a hard paste: the colour difference in one texel
    # At the photo region's edge and across both bands inside it no step is larger than the texture's own
    # plus the colour difference spread over the colour band (102 levels over 8 texels here).
    colour_width = round(size * texture.COLOUR_WIDTH)
    spread = 0.40 * 255 / colour_width
    for radius in range(70, 70 - 3 * colour_width, -1):
        assert boundary_step(albedo, disc(size, radius)) < natural + spread


def test_blend_ignores_the_dark_rim_of_the_photo_sample_and_an_empty_photo():
    size = 128
    generated = noisy(size, (0.4, 0.4, 0.4), seed=3)
    mask = disc(size, 30) * 0.98  # a bilinear rim: not photo
    torch.testing.assert_close(texture.blend_photo(generated, generated * 0 + mask, mask), generated)
    torch.testing.assert_close(texture.blend_photo(generated, generated * 0, mask * 0), generated)


def test_inner_ramp_is_zero_outside_and_one_deep_inside():
    mask = disc(128, 40)
    ramp = texture.inner_ramp(mask, 8)
    assert torch.all(ramp[mask == 0] == 0)
    assert torch.all(ramp[disc(128, 40 - 16 * 1.5) > 0] == 1)  # square windows: further in diagonally
    row = ramp[0, 0, 64, 24:64]
    assert torch.all(row[1:] >= row[:-1])  # rises from the edge towards the middle


def test_box_mean_is_the_windowed_mean_clipped_to_the_image():
    x = torch.rand(1, 3, 20, 31, dtype=torch.float64)
    expected = torch.nn.functional.avg_pool2d(x, 7, stride=1, padding=3, count_include_pad=False)
    torch.testing.assert_close(texture.box_mean(x, 3), expected)
    # Windows wider than the image: every pixel's window is the whole row or column, then the whole image.
    torch.testing.assert_close(texture.box_mean(x, 40), x.mean((-2, -1), keepdim=True).expand_as(x))
    rows = texture.box_mean(x[..., :1, :], 30)  # a 1-pixel-high image, windows of 61 along 31 columns
    torch.testing.assert_close(rows, x[..., :1, :].mean(-1, keepdim=True).expand_as(rows))


def test_official_texture_is_the_matched_texture_resized_and_clamped():
    matched = torch.rand(1, 3, 64, 64)
    out = texture.official_texture(matched, 256)
    assert out.shape == (1, 3, 256, 256) and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out[..., ::85, ::85], matched[..., ::21, ::21], atol=1e-5, rtol=0)  # corners/edges


@pytest.mark.parametrize("value", [0.3, 0.999])
def test_official_uint8_truncates(value):
    image = texture.official_uint8_image(torch.full((1, 3, 2, 2), value))
    assert image[0, 0, 0] == int(value * 255)


def test_delight_divides_by_the_shading_and_clamps():
    albedo = torch.full((1, 3, 4, 4), 0.3)
    shading = torch.full((1, 3, 4, 4), 0.5)
    torch.testing.assert_close(texture.delight(albedo, shading), torch.full_like(albedo, 0.6))
    dark = torch.zeros_like(shading)
    assert texture.delight(albedo, dark).max() <= 1.0
    torch.testing.assert_close(texture.delight(albedo, dark), (albedo / texture.MIN_SHADING).clamp(max=1))


def test_front_region_is_where_all_three_vertices_are_front_vertices():
    triangles = torch.tensor([[0, 1, 2], [1, 2, 3]])
    buffer = torch.tensor([[0, 1], [1, 0]])
    weights = torch.tensor([[[1.0, 0, 0], [0.2, 0.3, 0.5]], [[0, 0, 0], [0.3, 0.3, 0.4]]])
    mask = texture.front_region_mask(triangles, buffer, weights, torch.tensor([0, 1, 2]))
    assert mask.shape == (1, 1, 2, 2)
    assert mask[0, 0].tolist() == [[1.0, 0.0], [0.0, 1.0]]  # (1, 0) is uncovered
