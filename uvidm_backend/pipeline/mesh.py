"""The mesh stage: one photo's fitted BFM head as an exportable mesh (metres, outward triangles, its albedo)."""

from __future__ import annotations

import numpy as np

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


def head_mesh(fit: Fit, index: int, head_model: FaceModel, triangles: np.ndarray, uv: np.ndarray,
              albedo_image: np.ndarray, neutral: bool, name: str) -> TexturedMesh:
    """Photo `index` of the batch `fit` as a mesh, with the photo's expression or without it (`neutral`);
    `triangles` wound outwards (`outward_triangles`), `uv` (N, 2) v up (read-only int64 and float32 arrays are
    shared by the meshes, not copied)."""
    shape = (fit.id_shape if neutral else fit.shape)[index:index + 1]
    normals = head_model.compute_norm(shape) if neutral else fit.normals[index:index + 1]
    vertices = _read_only((shape[0] * BFM_UNIT_METRES).float().cpu().numpy())
    normals = _read_only((-normals[0]).float().cpu().numpy())  # BFM normals point inwards
    return TexturedMesh(vertices=vertices, faces=triangles, uv=uv, normals=normals, texture=albedo_image, name=name)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)  # a fresh array that nothing else holds: TexturedMesh keeps it without a copy
    return array
