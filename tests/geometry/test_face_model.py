"""Known answers of the face model (normals, rotation, SH shading) and of the camera."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from geometry.bfm_fixture import grid_mesh, point_buffer, synthetic_arrays, write_bfm_files

from uvidm_backend.geometry import camera
from uvidm_backend.geometry.bfm_files import load_bfm
from uvidm_backend.geometry.face_model import MEAN_SHAPE_CENTER, SH_A, SH_C, FaceModel, rotation, vertex_normals


@pytest.fixture(scope="module")
def bfm(tmp_path_factory):
    return load_bfm(write_bfm_files(synthetic_arrays(), tmp_path_factory.mktemp("bfm")))


def test_plane_normals_point_up():
    vertices, triangles = grid_mesh(4, 3)
    normals = vertex_normals(torch.from_numpy(vertices)[None], torch.from_numpy(triangles),
                             torch.from_numpy(point_buffer(triangles, len(vertices))))
    torch.testing.assert_close(normals[0], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(12, 3))


def test_pyramid_normals():
    """Apex of a square pyramid: straight up; a base corner: the normalised sum of its faces."""
    vertices = torch.tensor([[-1.0, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0], [0, 0, 1]])
    triangles = torch.tensor([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    normals = vertex_normals(vertices[None], triangles, torch.from_numpy(point_buffer(triangles.numpy(), 5)))
    torch.testing.assert_close(normals[0, 4], torch.tensor([0.0, 0.0, 1.0]))
    faces = torch.tensor([[0.0, -1, 1], [-1, 0, 1]]) / math.sqrt(2)  # faces 0 and 3 around vertex 0
    torch.testing.assert_close(normals[0, 0], torch.nn.functional.normalize(faces.sum(0), dim=0))


def test_rotation_is_orthonormal_and_acts_on_row_vectors():
    angles = torch.tensor([[0.3, -0.7, 1.1], [0.0, 0.0, 0.0], [-2.0, 0.5, 3.0]], dtype=torch.float64)
    rot = rotation(angles)
    eye = torch.eye(3, dtype=torch.float64).expand(3, 3, 3)
    torch.testing.assert_close(rot @ rot.transpose(1, 2), eye)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(3, dtype=torch.float64))
    theta = 0.4  # about z only: x axis -> (cos, sin, 0) with `v @ R`
    rot_z = rotation(torch.tensor([[0.0, 0.0, theta]], dtype=torch.float64))
    torch.testing.assert_close(torch.tensor([[1.0, 0, 0]], dtype=torch.float64) @ rot_z[0],
                               torch.tensor([[math.cos(theta), math.sin(theta), 0]], dtype=torch.float64))


def test_shape_texture_and_centre(bfm):
    model = FaceModel.whole_head(bfm)
    zeros = torch.zeros(2, model.id_dims), torch.zeros(2, model.exp_dims)
    shape, id_shape = model.compute_shape(*zeros)
    expected = bfm.full.mean_shape.reshape(-1, 3).astype(np.float32) - np.float32(MEAN_SHAPE_CENTER)
    torch.testing.assert_close(shape[1], torch.from_numpy(expected))
    torch.testing.assert_close(id_shape, shape)
    exp = torch.zeros(1, model.exp_dims)
    exp[0, 3] = 1.0
    shape, id_shape = model.compute_shape(torch.zeros(1, model.id_dims), exp)
    torch.testing.assert_close(shape - id_shape, torch.from_numpy(bfm.full.exp_base[:, 3]).float().reshape(1, -1, 3))
    texture = model.compute_texture(torch.zeros(1, model.tex_dims))
    raw = model.compute_texture(torch.zeros(1, model.tex_dims), normalize=False)
    torch.testing.assert_close(texture * 255, raw)
    assert texture.dtype == torch.float32 and model.state_dict() == {}


def test_ambient_shading(bfm):
    """gamma = 0 and the default ambient init_lit: colour = 0.8 * a0 * c0 * albedo, whatever the normal."""
    model = FaceModel.front_face(bfm)
    albedo = torch.rand(1, model.n_vertices, 3)
    normals = torch.nn.functional.normalize(torch.randn(1, model.n_vertices, 3), dim=-1)
    color = model.compute_color(albedo, normals, torch.zeros(1, 27))
    torch.testing.assert_close(color, 0.8 * SH_A[0] * SH_C[0] * albedo)


def test_float64_model(bfm):
    model = FaceModel.whole_head(bfm, dtype=torch.float64)
    shape, _ = model.compute_shape(torch.zeros(1, model.id_dims, dtype=torch.float64),
                                   torch.zeros(1, model.exp_dims, dtype=torch.float64))
    assert shape.dtype == torch.float64 and model.triangles.dtype == torch.int64
    assert model.compute_norm(shape).shape == shape.shape


def test_projection_of_the_optical_axis():
    points = torch.tensor([[[0.0, 0.0, 0.0], [0.1, -0.2, 0.3]]])
    cam = camera.to_camera(points, torch.eye(3)[None], torch.zeros(1, 3))
    assert points[0, 0, 2] == 0.0  # not modified in place
    torch.testing.assert_close(cam[0, 0], torch.tensor([0.0, 0.0, camera.CAMERA_DISTANCE]))
    xy = camera.project(cam)
    torch.testing.assert_close(xy[0, 0], torch.tensor([camera.CENTER, camera.CENTER]))
    distance = camera.CAMERA_DISTANCE - 0.3
    torch.testing.assert_close(xy[0, 1], torch.tensor([camera.CENTER + camera.FOCAL * 0.1 / distance,
                                                       camera.CENTER - camera.FOCAL * 0.2 / distance]))


def test_back_to_the_photo_float32_truncation_and_per_sample_clamp():
    # 100 * 1.93 is 193 in float32 but 192.99999... in float64: the crop height differs by one pixel
    params = torch.tensor([[120.0, 100.0, 1.93, 61.37, 47.71, 224.0], [50.0, 40.0, 2.0, 25.0, 20.0, 224.0]])
    xy = torch.tensor([[[112.0, 112.0], [5000.0, -5000.0]], [[112.0, 112.0], [5000.0, -5000.0]]])
    out = camera.projXY_to_original(xy, params)
    w, h = int(np.float32(120) * np.float32(1.93)), int(np.float32(100) * np.float32(1.93))
    assert h == 193
    s = np.float32(1.93)
    expected_x = (112 + w / 2 - 112) / s + np.float32(61.37) - 60
    expected_y = 99 - ((112 + h / 2 - 112) / s + np.float32(47.71) - 50)
    torch.testing.assert_close(out[0, 0], torch.tensor([expected_x, expected_y], dtype=torch.float32))
    torch.testing.assert_close(out[1, 0], torch.tensor([25.0, 19.0]))  # the centre of the crop -> (t0, h0-1-t1)
    torch.testing.assert_close(out[:, 1], torch.tensor([[119.0, 99.0], [49.0, 39.0]]))  # clamped per sample
    in_float64 = camera.projXY_to_original(xy.double(), params.double())
    assert abs(in_float64[0, 0, 1].item() - out[0, 0, 1].item() - 0.5 / 1.93) < 1e-4
