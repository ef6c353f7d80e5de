"""The official texture chain in the heads we write: `albedo_model_matched.png`, `--texture official`, the
default albedo's generated regions, the debug maps, which mask and tables made them, which arithmetic.

Each is checked against a computation written here: the official colour match with scikit-image, the
official mask read as visualize.py reads it, the official files loaded with numpy.
"""

import json

import numpy as np
import pytest
import skimage.color
import torch
import torch.nn.functional as F
from geometry.official_color import official_match_color_in_yuv
from PIL import Image
from pipeline.photos import fixture_landmarks, sample_photo
from scipy import ndimage

from uvidm_backend.devtools.model_folder import write_model_folder
from uvidm_backend.pipeline import GenerateOptions
from uvidm_backend.pipeline.pipeline import Pipeline

MODEL_SIZE = 64  # the fixture model's texture


@pytest.fixture(scope="module")
def official_paths(tmp_path_factory):
    """A model folder with the official 64 px UV tables and a front_mask.png."""
    return write_model_folder(tmp_path_factory.mktemp("official"), seed=0, uv_tables=True,
                              uv_table_size=MODEL_SIZE, front_mask=True)


@pytest.fixture(scope="module")
def official_pipeline(official_paths):
    return Pipeline.load(official_paths, device="cpu")


@pytest.fixture(scope="module")
def heads(official_pipeline, tmp_path_factory):
    """One face of t1, written with the default and the official texture, debug maps on."""
    face = fixture_landmarks()["t1.jpg"]["faces"][0]["lm5"]
    out = tmp_path_factory.mktemp("heads")
    folders = {}
    for texture in ("default", "official"):
        options = GenerateOptions(landmarks=face, steps=4, texture_size=256, texture=texture, debug_maps=True)
        folders[texture] = official_pipeline.generate_to_folder(sample_photo("t1.jpg"), out / texture, options)
    return folders


def read(folder, name):
    return np.asarray(Image.open(folder / name))


def read_official_front_mask(paths, size=MODEL_SIZE):
    """visualize.py: read_img('masktopo/front.png', resize=(256, 256), dst_range=1.), then [..., 0] > 0.5."""
    image = Image.open(paths.bfm / "front_mask.png").resize((size, size))
    return (np.asarray(image, np.float32) * (1 / 255.0))[..., 0] > 0.5


def upsampled(image_uint8, size):
    x = torch.from_numpy(image_uint8.astype(np.float32) / 255).permute(2, 0, 1)[None]
    # texel c of an S-texel UV map holds u = c / (S - 1): corner centres on corner centres
    x = F.interpolate(x, (size, size), mode="bicubic", align_corners=True).clamp(0, 1)
    return (x[0].permute(1, 2, 0).numpy() * 255).round()


def test_the_official_mask_and_tables_are_used_and_said(official_pipeline, official_paths, heads, pipeline):
    np.testing.assert_array_equal(official_pipeline.front_mask[0, 0].numpy() > 0.5,
                                  read_official_front_mask(official_paths))
    layout = official_pipeline.layouts.at(MODEL_SIZE)
    buffer, weight = layout.triangle_buffer, layout.barycentric_weight
    np.testing.assert_array_equal(buffer.numpy(), np.load(official_paths.bfm / "triangle_buffer.npy"))
    np.testing.assert_array_equal(weight.numpy(), np.load(official_paths.bfm / "barycentric_weight.npy"))
    result = json.loads((heads["default"] / "result.json").read_text())
    assert result["texture"] == {"albedo": "default", "front_mask": "official", "uv_tables": "official"}
    # the session's fixture folder has neither file: the stand-ins, said as such
    assert (pipeline.front_mask_source, pipeline.uv_tables_source) == ("footprint", "rebuilt")
    head = pipeline.generate(sample_photo("t1.jpg"), GenerateOptions(
        landmarks=fixture_landmarks()["t1.jpg"]["faces"][0]["lm5"], steps=2, texture_size=256))
    assert head.info["texture"] == {"albedo": "default", "front_mask": "footprint", "uv_tables": "rebuilt"}


def test_albedo_model_matched_is_the_official_colour_match(official_paths, heads):
    folder = heads["default"]
    matched = read(folder, "albedo_model_matched.png")
    generated, baseline = read(folder, "albedo_model.png"), read(folder, "baseline.png")
    assert matched.shape == generated.shape == baseline.shape == (MODEL_SIZE, MODEL_SIZE, 3)
    front = read_official_front_mask(official_paths)
    # the defining property: inside the mask the matched texture has the baseline's YUV mean and spread
    yuv = {name: skimage.color.rgb2yuv(image.astype(np.float64) / 255)[front]
           for name, image in (("matched", matched), ("baseline", baseline))}
    np.testing.assert_allclose(yuv["matched"].mean(0), yuv["baseline"].mean(0), atol=3e-3)
    np.testing.assert_allclose(yuv["matched"].std(0), yuv["baseline"].std(0), atol=3e-3)
    # and pointwise: the official formula on the written 8-bit inputs, written as visualize.py writes images
    mask = np.repeat(front[..., None], 3, axis=-1).astype(np.float32)
    expected = official_match_color_in_yuv(baseline.astype(np.float32), generated.astype(np.float32), mask)
    expected = ((expected / 255.0) * 255.0).astype(np.uint8)
    difference = np.abs(matched.astype(int) - expected)
    assert np.percentile(difference, 99) <= 2 and difference.max() <= 4  # 8-bit inputs: a level or two


def test_official_texture_is_the_matched_texture_upsampled(heads):
    folder = heads["official"]
    albedo = read(folder, "albedo.png").astype(int)
    expected = upsampled(read(folder, "albedo_model_matched.png"), 256)
    assert np.abs(albedo - expected).max() <= 2  # the PNG is truncated, the albedo rounded from floats


def test_default_albedo_keeps_the_official_colours_where_the_photo_does_not_reach(heads):
    folder = heads["default"]
    albedo = read(folder, "albedo.png").astype(int)
    expected = upsampled(read(folder, "albedo_model_matched.png"), 256)
    # The photo region of the output lies inside the condition's (the output also drops occluded texels).
    condition = read(folder, "condition_mask.png") > 0
    photo_region = np.kron(condition, np.ones((4, 4), bool))
    photo_region = ndimage.binary_dilation(photo_region, iterations=6)
    generated_region = ~photo_region
    assert generated_region.mean() > 0.3 and photo_region.mean() > 0.02
    assert np.abs(albedo - expected)[generated_region].max() <= 2
    # inside the photo region it is the photo, not the generated texture
    assert np.abs(albedo - expected)[photo_region].mean() > 3


def test_debug_maps_are_the_model_size_condition_and_baseline(heads, official_pipeline):
    folder = heads["default"]
    result = json.loads((folder / "result.json").read_text())
    assert {"condition.png", "condition_mask.png", "baseline.png"} <= set(result["files"])
    condition, mask, baseline = (read(folder, name) for name in ("condition.png", "condition_mask.png",
                                                                   "baseline.png"))
    assert condition.shape == baseline.shape == (MODEL_SIZE, MODEL_SIZE, 3) and mask.shape == (MODEL_SIZE,) * 2
    assert condition[mask == 0].max() == 0 and condition[mask > 0].max() > 0
    covered = official_pipeline.layouts.at(MODEL_SIZE).barycentric_weight.sum(-1).numpy() > 0
    assert baseline[~covered].max() == 0 and baseline[covered].mean() > 10


def test_result_records_the_arithmetic_of_each_network(heads):
    result = json.loads((heads["default"] / "result.json").read_text())
    assert result["precision"] == {"unet": "float32", "decoder": "float32", "condition_fuser": "float32",
                                   "recon_net": "float32", "face_parsing": "float32", "sampler_update": "float32"}
