"""What the full head makes once per model folder: kept on disk beside the correspondence and read back by
the next process's model, made again when the files it was made for change; the skin texture the same as
painting it texel by texel from the vertices; the eyes the same for every person."""

import io
import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image

from uvidm_backend.devtools.synthetic_head import write_bfm_folder
from uvidm_backend.fullhead import texture as paint
from uvidm_backend.fullhead.model import EYES, KEPT_SKIN_LAYOUTS, SKIN_LAYOUT_PREFIX, FullHeadModel
from uvidm_backend.geometry.bfm_files import load_bfm
from uvidm_backend.geometry.face_model import FaceModel

SIZE = 128


@pytest.fixture(scope="module")
def bfm(tmp_path_factory):
    return load_bfm(write_bfm_folder(tmp_path_factory.mktemp("bfm") / "BFM"))


@pytest.fixture(scope="module")
def face_model(bfm):
    return FaceModel.whole_head(bfm, dtype=torch.float64)


@pytest.fixture
def folder(tmp_path, ict_folder):
    """A copy of the synthetic ICT files without caches (each test makes its own)."""
    copy = tmp_path / "ict"
    shutil.copytree(ict_folder, copy, ignore=shutil.ignore_patterns("*.npz"))
    return copy


def _load(folder, bfm, face_model):
    return FullHeadModel.load(folder, bfm, face_model.mean_shape.reshape(-1, 3).numpy())


def _person(face_model, seed):
    generator = torch.Generator().manual_seed(seed)
    shape, identity = face_model.compute_shape(
        torch.randn(1, face_model.id_dims, generator=generator, dtype=torch.float64),
        torch.randn(1, face_model.exp_dims, generator=generator, dtype=torch.float64))
    return identity[0].numpy(), shape[0].numpy()


def _albedo(device="cpu"):
    u, v = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="xy")
    return torch.stack([0.5 + 0.4 * torch.sin(9 * u), 0.3 + 0.5 * v * v, 0.2 + 0.3 * u * v])[None].to(device)


def test_a_new_model_reads_the_skin_layout_and_the_eyes_from_disk(folder, bfm, face_model, monkeypatch):
    head = _load(folder, bfm, face_model).make_head(*_person(face_model, 0), _albedo(), SIZE)
    assert (folder / f"fullhead_skin_{SIZE}.npz").is_file() and (folder / "fullhead_eyes.npz").is_file()

    def no_rasterising(*args, **kwargs):
        raise AssertionError("rasterised again")

    monkeypatch.setattr(paint.UVBake, "build", no_rasterising)
    again = _load(folder, bfm, face_model).make_head(*_person(face_model, 0), _albedo(), SIZE)
    for material, same in zip(head.mesh.materials, again.mesh.materials, strict=True):
        assert (material.texture is None) == (same.texture is None)
        if material.texture is not None:
            np.testing.assert_array_equal(material.texture, same.texture)


def test_caches_of_other_model_files_are_made_again(folder, bfm, face_model):
    head = _load(folder, bfm, face_model).make_head(*_person(face_model, 0), _albedo(), SIZE)
    layout = folder / f"fullhead_skin_{SIZE}.npz"
    with np.load(layout) as data:
        np.savez(layout, key=np.array("made for other files"), grid=np.zeros_like(data["grid"]),
                 share=np.zeros_like(data["share"]))
    again = _load(folder, bfm, face_model).make_head(*_person(face_model, 0), _albedo(), SIZE)
    np.testing.assert_array_equal(again.mesh.materials[0].texture, head.mesh.materials[0].texture)
    with np.load(layout) as data:
        assert str(data["key"]) != "made for other files"


def test_only_the_latest_sizes_are_kept(folder, bfm, face_model):
    model = _load(folder, bfm, face_model)
    sizes = [16 + 8 * step for step in range(KEPT_SKIN_LAYOUTS + 1)]
    for size in sizes:
        model.skin_layout(size)
        time.sleep(0.01)  # distinct modification times
    kept = sorted(int(path.stem.removeprefix(SKIN_LAYOUT_PREFIX)) for path in folder.glob(f"{SKIN_LAYOUT_PREFIX}*"))
    assert kept == sizes[1:]
    assert model.skin_layout(sizes[-1]).grid.shape == (sizes[-1], 2 * sizes[-1], 2)


def test_skin_texture_is_the_albedo_read_through_each_texel_s_vertices(folder, bfm, face_model):
    model = _load(folder, bfm, face_model)
    albedo = _albedo()
    texture = model.make_head(*_person(face_model, 1), albedo, SIZE).mesh.materials[0].texture
    skin = model.parts[0]
    bake = paint.UVBake.build(skin.uv, skin.faces, (SIZE, SIZE * skin.tiles))
    values = bake.bake(np.column_stack([model.bfm_uv_of_vertex[skin.source],
                                        model.correspondence.texture_weight[skin.source]]))
    share = np.clip(values[..., 2:3], 0.0, 1.0)
    tone = paint.skin_tone(albedo, model.bfm_uv_of_vertex[model.tone_vertices])
    expected = share * paint.sample_texture(albedo, values[..., :2]) + (1.0 - share) * tone
    expected = (np.clip(expected, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    assert texture.shape == (SIZE, 2 * SIZE, 3)
    assert np.abs(texture.astype(int) - expected).max() <= 1  # rounding of the blend, float32 either way
    assert len(np.unique(texture.reshape(-1, 3), axis=0)) > 100  # the albedo's variation came through


def test_eyes_are_the_same_for_every_person_and_their_pngs_hold_them(folder, bfm, face_model):
    model = _load(folder, bfm, face_model)
    heads = [model.make_head(*_person(face_model, seed), _albedo(), SIZE) for seed in (2, 3)]
    eyes = [index for index, material in enumerate(heads[0].mesh.materials)
            if material.name.removeprefix("head_full_") in EYES]
    assert len(eyes) == 4 and sorted(heads[0].pngs) == eyes
    for index in eyes:
        material = heads[0].mesh.materials[index]
        np.testing.assert_array_equal(material.texture, heads[1].mesh.materials[index].texture)
        png = np.asarray(Image.open(io.BytesIO(heads[0].pngs[index])).convert("RGB"))
        np.testing.assert_array_equal(png, material.texture)
        assert material.texture.std() > 5  # painted: pupil, iris and sclera, not one colour


@pytest.mark.gpu
def test_skin_texture_on_the_gpu_matches_the_cpu(folder, bfm, face_model):
    model = _load(folder, bfm, face_model)
    person = _person(face_model, 4)
    on_cpu = model.make_head(*person, _albedo(), SIZE).mesh.materials[0].texture
    on_gpu = model.make_head(*person, _albedo("cuda"), SIZE).mesh.materials[0].texture
    assert np.abs(on_cpu.astype(int) - on_gpu).max() <= 1
