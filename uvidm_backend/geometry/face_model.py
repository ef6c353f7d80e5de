"""The Basel Face Model as batched torch functions: shape, texture, normals, SH shading, rotation.

Mirrors `ldm/modules/parametric_face_model.py:ParametricFaceModel` and
`ldm/modules/renderer.py:get_R_T` / `compute_norm` of the official UV-IDM code (themselves
Deep3DFaceRecon's `models/bfm.py`), built from loaded arrays instead of file paths.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bfm_files import BFMData, MorphableModel

# `parametric_face_model.py:29` subtracts this fixed point from every mean-shape vertex instead of
# re-centring on the mean (Deep3DFaceRecon's `recenter`): it is the centre of the 35,709-vertex
# front model, applied unchanged to the whole-head model too (trap 21).
MEAN_SHAPE_CENTER = (-0.003226267, 0.045060683, 0.75983167)

# Ambient-only initial lighting added to the predicted SH coefficients of every colour (visualize.py).
DEFAULT_INIT_LIT = (0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

# Spherical-harmonics constants of Deep3DFaceRecon (`SH.a`, `SH.c`).
SH_A = (math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0))
SH_C = (1 / math.sqrt(4 * math.pi), math.sqrt(3.0) / math.sqrt(4 * math.pi),
        3 * math.sqrt(5.0) / math.sqrt(12 * math.pi))


def vertex_normals(vertices: Tensor, triangles: Tensor, point_buf: Tensor) -> Tensor:
    """Per-vertex unit normals (official `compute_norm`).

    vertices (B, N, 3); triangles (F, 3) 0-based; point_buf (N, P) 0-based faces around each
    vertex, padded with F (a zero normal appended as face F). Face normal =
    normalize(cross(v1 - v2, v2 - v3)); vertex normal = normalize(sum of its faces' normals).
    """
    v1 = vertices[:, triangles[:, 0]]
    v2 = vertices[:, triangles[:, 1]]
    v3 = vertices[:, triangles[:, 2]]
    face_norm = F.normalize(torch.cross(v1 - v2, v2 - v3, dim=-1), dim=-1, p=2)
    face_norm = torch.cat([face_norm, face_norm.new_zeros(face_norm.shape[0], 1, 3)], dim=1)
    return F.normalize(face_norm[:, point_buf].sum(dim=2), dim=-1, p=2)


def rotation(angles: Tensor) -> Tensor:
    """(B, 3) Euler angles in radians -> (B, 3, 3) R = (Rz @ Ry @ Rx)^T (official `get_R_T`).

    Points are rotated as row vectors: `v @ R`.
    """
    batch = angles.shape[0]
    ones = angles.new_ones(batch, 1)
    zeros = angles.new_zeros(batch, 1)
    x, y, z = angles[:, :1], angles[:, 1:2], angles[:, 2:3]
    rot_x = torch.cat([ones, zeros, zeros,
                       zeros, torch.cos(x), -torch.sin(x),
                       zeros, torch.sin(x), torch.cos(x)], dim=1).reshape(batch, 3, 3)
    rot_y = torch.cat([torch.cos(y), zeros, torch.sin(y),
                       zeros, ones, zeros,
                       -torch.sin(y), zeros, torch.cos(y)], dim=1).reshape(batch, 3, 3)
    rot_z = torch.cat([torch.cos(z), -torch.sin(z), zeros,
                       torch.sin(z), torch.cos(z), zeros,
                       zeros, zeros, ones], dim=1).reshape(batch, 3, 3)
    return (rot_z @ rot_y @ rot_x).permute(0, 2, 1)


def sh_basis(normals: Tensor) -> Tensor:
    """(B, N, 3) unit normals -> (B, N, 9) the 9-term SH irradiance basis of Deep3DFaceRecon."""
    a, c = SH_A, SH_C
    nx, ny, nz = normals[..., :1], normals[..., 1:2], normals[..., 2:]
    return torch.cat([
        a[0] * c[0] * torch.ones_like(nx),
        -a[1] * c[1] * ny,
        a[1] * c[1] * nz,
        -a[1] * c[1] * nx,
        a[2] * c[2] * nx * ny,
        -a[2] * c[2] * ny * nz,
        0.5 * a[2] * c[2] / math.sqrt(3.0) * (3 * nz ** 2 - 1),
        -a[2] * c[2] * nx * nz,
        0.5 * a[2] * c[2] * (nx ** 2 - ny ** 2),
    ], dim=-1)


class FaceModel(nn.Module):
    """A BFM-format linear face model on one device/dtype (official `ParametricFaceModel`).

    The arrays are non-persistent buffers: `.to()` moves them, `state_dict()` stays empty.
    `triangles` / `point_buf` are the pair used for normals: by default the model's own `tri`
    and `point_buf`; the whole head uses `example1.mat`'s `full_triangles` (see `whole_head`).
    """

    def __init__(self, model: MorphableModel, *, triangles: np.ndarray | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                 center: tuple[float, float, float] | None = MEAN_SHAPE_CENTER):
        super().__init__()
        np_dtype = torch.empty((), dtype=dtype).numpy().dtype
        # Cast first, then subtract the centre in that precision, as the official code does in float32.
        mean_shape = np.asarray(model.mean_shape, dtype=np_dtype).reshape(-1, 3)
        if center is not None:
            mean_shape = mean_shape - np.asarray(center, dtype=np_dtype)[None, :]
        triangles = model.triangles if triangles is None else np.asarray(triangles)
        if model.point_buf.max(initial=0) > triangles.shape[0]:
            raise ValueError(f"point_buf of {model.path.name} refers to face {model.point_buf.max()}, "
                             f"but only {triangles.shape[0]} triangles (+ padding) were given")

        def buffer(name: str, value: np.ndarray, kind: torch.dtype) -> None:
            tensor = torch.from_numpy(np.ascontiguousarray(value)).to(device=device, dtype=kind)
            self.register_buffer(name, tensor, persistent=False)

        buffer("mean_shape", mean_shape.reshape(1, -1), dtype)
        buffer("mean_tex", np.asarray(model.mean_tex, dtype=np_dtype).reshape(1, -1), dtype)
        buffer("id_base", np.asarray(model.id_base, dtype=np_dtype), dtype)
        buffer("exp_base", np.asarray(model.exp_base, dtype=np_dtype), dtype)
        buffer("tex_base", np.asarray(model.tex_base, dtype=np_dtype), dtype)
        buffer("triangles", triangles, torch.int64)
        buffer("point_buf", model.point_buf, torch.int64)

    @classmethod
    def whole_head(cls, bfm: BFMData, **kwargs) -> FaceModel:
        """The 5w model with `full_triangles` (Deep3dEncoder / visualize.py `facemodel_5w`)."""
        return cls(bfm.full, triangles=bfm.full_triangles, **kwargs)

    @classmethod
    def front_face(cls, bfm: BFMData, **kwargs) -> FaceModel:
        """The front model with its own `tri` (visualize.py `facemodel`, baseline shading)."""
        if bfm.front is None:
            raise ValueError("the BFM data was loaded without BFM_model_front.mat")
        return cls(bfm.front, **kwargs)

    @property
    def n_vertices(self) -> int:
        return self.mean_shape.shape[1] // 3

    @property
    def id_dims(self) -> int:
        return self.id_base.shape[1]

    @property
    def exp_dims(self) -> int:
        return self.exp_base.shape[1]

    @property
    def tex_dims(self) -> int:
        return self.tex_base.shape[1]

    def compute_shape(self, id_coeff: Tensor, exp_coeff: Tensor) -> tuple[Tensor, Tensor]:
        """(B, K_id), (B, K_exp) -> face shape and identity-only shape, each (B, N, 3)."""
        batch = id_coeff.shape[0]
        id_part = torch.einsum("ij,aj->ai", self.id_base, id_coeff)
        exp_part = torch.einsum("ij,aj->ai", self.exp_base, exp_coeff)
        shape = (id_part + exp_part + self.mean_shape).reshape(batch, -1, 3)
        id_shape = (id_part + self.mean_shape).reshape(batch, -1, 3)
        return shape, id_shape

    def compute_texture(self, tex_coeff: Tensor, normalize: bool = True) -> Tensor:
        """(B, K_tex) -> (B, N, 3) albedo, RGB in [0, 1] (or 0..255 with normalize=False)."""
        batch = tex_coeff.shape[0]
        texture = (torch.einsum("ij,aj->ai", self.tex_base, tex_coeff) + self.mean_tex).reshape(batch, -1, 3)
        return texture / 255.0 if normalize else texture

    def compute_norm(self, shape: Tensor) -> Tensor:
        """(B, N, 3) -> (B, N, 3) unit vertex normals with this model's triangles/point_buf."""
        return vertex_normals(shape, self.triangles, self.point_buf)

    def compute_color(self, texture: Tensor, normals: Tensor, gamma: Tensor,
                      init_lit: Tensor | np.ndarray | tuple[float, ...] = DEFAULT_INIT_LIT) -> Tensor:
        """Lambertian SH shading: (B, N, 3) albedo, rotated normals, (B, 27) or (B, 3, 9) gamma.

        `init_lit` (9,) is added to the coefficients of all three colours.
        """
        batch = gamma.shape[0]
        init_lit = torch.as_tensor(np.asarray(init_lit) if not torch.is_tensor(init_lit) else init_lit)
        gamma = gamma.reshape(batch, 3, 9) + init_lit.to(device=gamma.device, dtype=gamma.dtype)
        return (sh_basis(normals) @ gamma.permute(0, 2, 1)) * texture

    @staticmethod
    def rotation(angles: Tensor) -> Tensor:
        """See the module-level `rotation`."""
        return rotation(angles)
