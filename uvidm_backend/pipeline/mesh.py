"""The mesh stage: the fitted BFM heads of a batch as exportable meshes (metres, outward triangles, albedo)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor

from uvidm_backend.geometry.face_model import FaceModel
from uvidm_backend.pipeline.export import TexturedMesh
from uvidm_backend.pipeline.fit import Fit

BFM_UNIT_METRES = 0.1  # BFM coordinates are in units of 10 cm (focal 1015 px at distance 10)


def outward_triangles(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Triangles wound counter-clockwise seen from outside (glTF/OBJ front faces).

    BFM's winding makes `compute_norm` point into the head; exporters need the other way.
    """
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    outward = (a + b + c) / 3 - vertices.mean(axis=0)
    return triangles if np.sum(normals * outward) >= 0 else triangles[:, ::-1].copy()


def head_meshes(fit: Fit, neutral: Sequence[bool], head_model: FaceModel, triangles: np.ndarray, uv: np.ndarray,
                albedo_images: Sequence[np.ndarray], names: Sequence[str]) -> list[TexturedMesh]:
    """Each photo of the batch `fit` as a mesh, with the photo's expression or without it (`neutral[k]`);
    `triangles` wound outwards (`outward_triangles`), `uv` (N, 2) v up. Read-only int64 and float32 arrays are
    shared by the meshes, not copied; the vertices and normals of the batch come from the device in one copy
    each (views of it, read-only)."""
    posed, still = (_batch_arrays(fit.shape, fit.normals) if not all(neutral) else None,
                    _batch_arrays(fit.id_shape, head_model.compute_norm(fit.id_shape)) if any(neutral) else None)
    meshes = []
    for k, (is_neutral, albedo, name) in enumerate(zip(neutral, albedo_images, names, strict=True)):
        vertices, normals = still if is_neutral else posed
        meshes.append(TexturedMesh(vertices=vertices[k], faces=triangles, uv=uv, normals=normals[k],
                                   texture=albedo, name=name))
    return meshes


def _batch_arrays(shape: Tensor, normals: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(B, N, 3) vertices in metres and outward normals (BFM's point inwards), read-only float32."""
    arrays = ((shape * BFM_UNIT_METRES).float().cpu().numpy(), (-normals).float().cpu().numpy())
    for array in arrays:
        array.setflags(write=False)  # fresh arrays that nothing else holds: the meshes keep views of them
    return arrays
