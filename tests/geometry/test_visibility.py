"""Depth-tested visibility on meshes with known answers."""

import torch

from uvidm_backend.geometry.camera import CAMERA_DISTANCE, project, to_camera
from uvidm_backend.geometry.raster import get_rasterizer
from uvidm_backend.geometry.visibility import depth_visible_vertices


def plane(size: float, z: float, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """An n x n vertex square facing the camera (+z), side `size` BFM units, at depth z."""
    ys, xs = torch.meshgrid(torch.linspace(-size / 2, size / 2, n), torch.linspace(-size / 2, size / 2, n),
                            indexing="ij")
    vertices = torch.stack([xs.flatten(), ys.flatten(), torch.full((n * n,), z)], dim=1)
    idx = torch.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].flatten(), idx[:-1, 1:].flatten(), idx[1:, :-1].flatten(), idx[1:, 1:].flatten()
    return vertices, torch.cat([torch.stack([a, b, c], 1), torch.stack([b, d, c], 1)])


def visibility(vertices, triangles):
    identity, zero = torch.eye(3)[None], torch.zeros(1, 3)
    camera = to_camera(vertices[None], identity, zero)
    return depth_visible_vertices(project(camera), camera[..., 2], triangles, get_rasterizer("cpu"))[0]


def test_a_plane_in_front_hides_the_plane_behind():
    front, front_tris = plane(1.0, 0.5)
    back, back_tris = plane(2.0, -0.5, n=11)
    vertices = torch.cat([front, back])
    triangles = torch.cat([front_tris, back_tris + len(front)])
    visible = visibility(vertices, triangles)
    assert visible[: len(front)].all()
    behind = back[:, 0].abs().lt(0.4) & back[:, 1].abs().lt(0.4)  # well inside the front plane's shadow
    assert not visible[len(front):][behind].any()
    outside = back[:, 0].abs().gt(0.7) | back[:, 1].abs().gt(0.7)
    assert visible[len(front):][outside].all()


def test_an_unoccluded_surface_is_fully_visible():
    vertices, triangles = plane(1.5, 0.0, n=9)
    assert visibility(vertices, triangles).all()
    assert CAMERA_DISTANCE > 1.5  # the plane is in front of the camera
