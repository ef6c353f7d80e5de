"""The random-weight model folder: complete, loadable by every loader, geometrically sensible, reproducible."""

import logging
import warnings

import numpy as np
import pytest
import torch

from uvidm_backend.devtools import model_folder
from uvidm_backend.devtools.model_folder import main, write_model_folder
from uvidm_backend.devtools.synthetic_head import synthetic_head
from uvidm_backend.diffusion import ddim_schedule, sample_ddim
from uvidm_backend.geometry import camera
from uvidm_backend.geometry.align import alignment_params, extract_lm5_from_lm68
from uvidm_backend.geometry.bfm_files import load_bfm
from uvidm_backend.geometry.face_model import MEAN_SHAPE_CENTER, FaceModel, rotation
from uvidm_backend.models.stack import (
    LatentDiffusionConfig,
    load_face_parsing,
    load_latent_diffusion,
    load_recon_net,
)
from uvidm_backend.registry import MODEL_FILES, REPO_ROOT

SEED = 5


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return root, write_model_folder(root, seed=SEED, uv_tables=True, front_mask=True)


@pytest.fixture(scope="module")
def bfm(folder):
    return load_bfm(folder[1].bfm)


@pytest.fixture(scope="module")
def networks(folder):
    paths = folder[1]
    config = LatentDiffusionConfig.from_file(paths.path("ldm_config.json"))
    return load_latent_diffusion(paths.locate("ldm.ckpt"), config)


def mean_head(bfm):
    """The whole head with zero coefficients, re-centred as FaceModel does: (N, 3)."""
    model = FaceModel.whole_head(bfm)
    shape, _ = model.compute_shape(torch.zeros(1, model.id_dims), torch.zeros(1, model.exp_dims))
    return model, shape


def project_frontal(points):
    """(1, N, 3) model coordinates, zero pose -> (N, 2) crop pixels (y up) and camera depth (N,)."""
    vertices_camera = camera.to_camera(points, rotation(torch.zeros(1, 3)), torch.zeros(1, 3))
    return camera.project(vertices_camera)[0], vertices_camera[0, :, 2]


def test_every_model_file_is_written_with_a_warning_readme(folder):
    root, paths = folder
    assert paths.missing(include_optional=True) == []
    assert all(paths.path(file).is_file() for file in MODEL_FILES)
    readme = (root / "README.txt").read_text()
    assert "RANDOM WEIGHTS" in readme and "MEANINGLESS" in readme


def test_bfm_folder_loads_without_warnings(folder, caplog):
    with caplog.at_level(logging.DEBUG), warnings.catch_warnings():
        warnings.simplefilter("error")
        bfm = load_bfm(folder[1].bfm)
    assert [record for record in caplog.records if record.levelno >= logging.WARNING] == []
    # Index bases as the official code reads them (trap 2).
    assert bfm.full.triangles_base == 1 and bfm.full.point_buf_base == 0
    assert bfm.front.triangles_base == 1 and bfm.front.point_buf_base == 1
    np.testing.assert_array_equal(bfm.full.triangles, bfm.full_triangles)
    assert bfm.full.point_buf.max() == len(bfm.full_triangles)  # padded with F
    assert bfm.front.point_buf.max() == len(bfm.front.triangles)
    assert 1000 <= bfm.full.n_vertices <= 2000
    assert bfm.full.id_base.shape[1] == 80 and bfm.full.exp_base.shape[1] == 64 and bfm.full.tex_base.shape[1] == 80
    full = bfm.full.mean_shape.reshape(-1, 3)
    np.testing.assert_array_equal(bfm.front.mean_shape.reshape(-1, 3), full[bfm.front_idx])
    np.testing.assert_array_equal(bfm.full.keypoints[:5], bfm.front_idx[bfm.front.keypoints[:5]])
    assert 0.0 < bfm.uv.min() and bfm.uv.max() < 1.0
    assert bfm.triangle_buffer.shape == (256, 256) and bfm.barycentric_weight.shape == (256, 256, 3)


def test_mean_texture_is_skin_coloured(bfm):
    colours = bfm.full.mean_tex.reshape(-1, 3)
    assert colours.min() >= 0 and colours.max() <= 255
    front = colours[bfm.front_idx]
    assert np.all(np.median(front, axis=0) > [150, 100, 80]) and np.all(np.diff(np.median(front, axis=0)) < 0)


def test_mean_face_is_centred_in_the_crop_and_faces_the_camera(bfm):
    model, shape = mean_head(bfm)
    front = torch.from_numpy(bfm.front_idx)
    assert torch.allclose(shape[0, front].mean(dim=0), torch.zeros(3), atol=1e-4)  # as MEAN_SHAPE_CENTER implies
    projected, depth = project_frontal(shape)
    assert depth.min() > camera.Z_NEAR and depth.max() < camera.Z_FAR
    assert projected.min() >= 0 and projected.max() <= camera.CROP_SIZE
    face = projected[front]
    centre = (face.min(dim=0).values + face.max(dim=0).values) / 2
    assert torch.allclose(centre, torch.full((2,), camera.CENTER), atol=8)
    width = (face[:, 0].max() - face[:, 0].min()) / camera.CROP_SIZE
    assert 0.4 <= width <= 0.7
    # Normals point into the head (BFM winding): the face passes UV-IDM's visibility test -n_z > 0.1.
    normals = model.compute_norm(shape)[0]
    assert (-normals[front, 2] > 0.1).float().mean() > 0.8
    outward = shape[0] - shape[0].mean(dim=0)
    assert ((normals * outward).sum(dim=1) < 0).float().mean() > 0.95


def test_uv_layout_puts_the_face_in_the_middle(bfm):
    face_uv = bfm.uv[bfm.front_idx]
    np.testing.assert_allclose(face_uv.mean(axis=0), [0.5, 0.5], atol=0.05)
    head = synthetic_head(SEED)
    # u grows to the right of the face (+x), v upwards (+y).
    nose, left_eye = head.keypoints[30], head.keypoints[36]
    assert head.uv[left_eye, 0] < head.uv[nose, 0] and head.uv[left_eye, 1] > head.uv[nose, 1]


def distance_to_mesh(points, vertices, triangles):
    """Distance of each point to the nearest triangle whose interior it projects into (inf if none)."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    normal = np.cross(b - a, c - a)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    offset = ((points[:, None] - a[None]) * normal[None]).sum(-1)  # (P, F)
    foot = points[:, None] - offset[..., None] * normal[None]
    inside = np.ones(offset.shape, dtype=bool)
    for p, q in ((a, b), (b, c), (c, a)):
        inside &= (np.cross(q - p, foot - p) * normal).sum(-1) >= -1e-9
    return np.where(inside, np.abs(offset), np.inf).min(axis=1)


def test_landmarks_lie_on_the_mean_face_at_anatomical_places(bfm):
    vertices = bfm.full.mean_shape.reshape(-1, 3).astype(np.float64)
    lm = bfm.lm3d
    assert distance_to_mesh(lm, vertices, bfm.full_triangles).max() < 1e-4  # stored coordinates, on the surface
    left_eye, right_eye, nose, left_mouth, right_mouth = extract_lm5_from_lm68(lm)
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < nose[0] < right_mouth[0]
    assert left_eye[1] > nose[1] > left_mouth[1] and right_eye[1] > nose[1] > right_mouth[1]
    assert lm[30, 2] == lm[:, 2].max()  # id 31, the nose tip, is the front-most landmark
    assert 0.5 < right_eye[0] - left_eye[0] < 0.8  # 5-8 cm between the eyes
    np.testing.assert_allclose(left_eye[0] + right_eye[0], 2 * MEAN_SHAPE_CENTER[0], atol=0.02)


def test_alignment_of_the_projected_landmarks_keeps_the_crop(bfm):
    """A photo showing the mean head as the camera sees it is aligned (nearly) onto itself."""
    lm = torch.from_numpy(bfm.lm3d - np.asarray(MEAN_SHAPE_CENTER))[None].float()
    projected, _ = project_frontal(lm)
    w0, h0, scale, t0, t1, _ = alignment_params(extract_lm5_from_lm68(projected.numpy()),
                                                extract_lm5_from_lm68(bfm.lm3d), (224, 224))
    assert scale == pytest.approx(1.0, abs=0.05)
    assert abs(t0 - camera.CENTER) < 8 and abs(t1 - camera.CENTER) < 8


def test_networks_load_with_the_official_loaders(folder, networks):
    paths = folder[1]
    recon_net = load_recon_net(paths.locate("epoch_20.pth"))
    parsing = load_face_parsing(paths.locate("79999_iter.pth"))
    ema = load_latent_diffusion(paths.locate("ldm.ckpt"), networks.config, use_ema=True)
    assert networks.config.texture_size == 64 and networks.scale_factor.item() == 1.0
    # ldm.ckpt holds the same reconstruction / parsing networks as the separate files.
    for ours, theirs in ((networks.recon_net, recon_net), (networks.seg_model, parsing), (networks.unet, ema.unet)):
        for (name, value), other in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
            assert torch.equal(value, other), name


@pytest.mark.parametrize("image", ["random", "grey", "white", "smooth"])
def test_coefficients_are_small_and_skin_is_found(networks, image):
    generator = torch.Generator().manual_seed(0)
    photo = {
        "random": torch.rand(1, 3, 224, 224, generator=generator),
        "grey": torch.full((1, 3, 224, 224), 0.5),
        "white": torch.ones(1, 3, 224, 224),
        "smooth": torch.nn.functional.interpolate(torch.rand(1, 3, 7, 7, generator=generator), (224, 224),
                                                  mode="bilinear"),
    }[image]
    coefficients = networks.recon_net(photo)
    assert coefficients.to_vector().abs().max() < 0.1
    assert coefficients.angle.abs().max() < 0.06 and coefficients.trans.abs().max() < 0.05
    labels = networks.seg_model(torch.nn.functional.interpolate(photo, (512, 512)))[0].argmax(dim=1)
    assert (labels == model_folder.SKIN_LABEL).float().mean() > 0.5


def test_fifty_ddim_steps_give_a_finite_texture(networks):
    generator = torch.Generator().manual_seed(0)
    size = networks.config.texture_size
    partial_texture = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
    context = networks.condition_fuser(partial_texture)
    x_T = torch.randn(1, networks.config.channels, networks.config.image_size, networks.config.image_size,
                      generator=generator)
    latent = sample_ddim(networks.unet, x_T, context, ddim_schedule(networks.schedule, 50), generator=generator)
    texture = networks.decode_latent(latent)
    assert texture.shape == (1, 3, size, size)
    assert torch.isfinite(latent).all() and torch.isfinite(texture).all()
    assert texture.std() > 0


def test_writing_is_deterministic_for_a_seed(folder, tmp_path):
    root, _ = folder
    again = write_model_folder(tmp_path / "again", seed=SEED, uv_tables=True, front_mask=True)
    files = sorted(path.relative_to(root) for path in root.rglob("*") if path.is_file())
    for name in files:
        if name.name != "README.txt":  # names the folder
            assert (tmp_path / "again" / name).read_bytes() == (root / name).read_bytes(), name
    other = write_model_folder(tmp_path / "other", seed=SEED + 1)
    assert other.path("ldm.ckpt").read_bytes() != again.path("ldm.ckpt").read_bytes()
    assert not np.array_equal(load_bfm(other.bfm).full.id_base, load_bfm(again.bfm).full.id_base)


def test_texture_size_must_suit_the_networks(tmp_path):
    with pytest.raises(ValueError, match="multiple of 8"):
        write_model_folder(tmp_path, texture_size=60)


def test_command_line_says_the_weights_are_random(tmp_path, capsys):
    assert main([str(tmp_path / "out"), "--seed", "2", "--texture-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in out and "MEANINGLESS" in out and str(tmp_path / "out" / "weights") in out
    config = LatentDiffusionConfig.from_file(tmp_path / "out" / "weights" / "ldm_config.json")
    assert config.texture_size == 32
    assert not (tmp_path / "out" / "BFM" / "triangle_buffer.npy").exists()


def test_command_line_refuses_the_real_model_folders():
    with pytest.raises(SystemExit):
        main([str(REPO_ROOT / "weights")])


def test_denser_heads_keep_the_layout(tmp_path):
    """A finer grid (for benchmarks at the real head's size) keeps the face region, UVs and landmarks."""
    coarse, fine = synthetic_head(SEED), synthetic_head(SEED, grid_step_deg=2.5)
    assert fine.n_vertices == 121 * 61 and fine.triangles.shape == (120 * 60 * 2, 3)
    assert fine.front_idx.size == 57 * 47  # longitude -70..70, latitude -60..55 at 2.5 deg
    np.testing.assert_allclose(fine.mean_shape[fine.front_idx].mean(axis=0), MEAN_SHAPE_CENTER, atol=1e-9)
    np.testing.assert_allclose(fine.landmarks, coarse.landmarks, atol=0.02)  # the same face, finer
    with pytest.raises(ValueError, match="must divide 5 deg"):
        synthetic_head(SEED, grid_step_deg=2.0)
    paths = write_model_folder(tmp_path, head_grid_step_deg=2.5)
    assert load_bfm(paths.bfm).full.mean_shape.size == 3 * fine.n_vertices
