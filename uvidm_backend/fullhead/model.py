"""The full head's model, prepared once per model folder, and the head it makes for one BFM fit.

`FullHeadModel.load(folder, bfm)` reads the ICT model (cached), the ICT<->BFM correspondence (cached
in the same folder) and factors the fit; `make_head(...)` fits, paints and returns a `MorphedMesh`:
skin (face, head, neck, mouth socket; our albedo + skin tone), eyes (sclera and iris per side), teeth,
gums and tongue, eyelashes (alpha-blended), each its own material, with the ICT expression shapes as
named morph targets. ICT's lacrimal fluid, eye-blend and eye-occlusion meshes are left out: they only
look right with Unreal's digital-human shaders.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from uvidm_backend.fullhead import texture as paint
from uvidm_backend.fullhead.correspondence import (
    BFM_UNIT_CM,
    Correspondence,
    build_correspondence,
    cached_correspondence,
    correspondence_key,
    vertex_normals,
)
from uvidm_backend.fullhead.fit import FitSystem, FullHeadFit, fit_full_head
from uvidm_backend.fullhead.ict_files import ICTModel, folder_key, load_ict_model
from uvidm_backend.geometry.bfm_files import BFMData
from uvidm_backend.pipeline.export import Material, MeshPart, MorphedMesh

log = logging.getLogger(__name__)

METRES_PER_BFM_UNIT = 0.1
EYE_TEXTURE_SIZE = 256


@dataclass(frozen=True)
class PartSpec:
    name: str
    materials: tuple[str, ...]  # ICT materials that make the part
    base_color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    textured: bool = False
    roughness: float = 0.6
    blend: bool = False


PARTS = (
    PartSpec("skin", ("M_Face", "M_BackHead"), textured=True),
    PartSpec("sclera_L", ("M_ScleraLeft",), textured=True, roughness=0.15),
    PartSpec("sclera_R", ("M_ScleraRight",), textured=True, roughness=0.15),
    PartSpec("iris_L", ("M_IrisLeft",), textured=True, roughness=0.3),
    PartSpec("iris_R", ("M_IrisRight",), textured=True, roughness=0.3),
    PartSpec("teeth", ("M_Teeth",), (0.86, 0.82, 0.72, 1.0), roughness=0.3),
    PartSpec("gums_tongue", ("M_GumsTongue",), (0.62, 0.24, 0.25, 1.0), roughness=0.35),
    PartSpec("eyelashes", ("M_EyeLashes",), (0.03, 0.025, 0.02, 0.85), roughness=0.7, blend=True),
)
EYES = {"sclera_L": "L", "sclera_R": "R", "iris_L": "L", "iris_R": "R"}


@dataclass(frozen=True, eq=False)
class SplitPart:
    """One part's vertices split where UVs differ: split vertex i is ICT vertex `source[i]` at `uv[i]`."""

    spec: PartSpec
    source: np.ndarray  # (M,) ICT vertex indices
    uv: np.ndarray  # (M, 2) in [0, 1] (ICT's UDIM tiles of the part packed side by side)
    faces: np.ndarray  # (T, 3) split-vertex indices
    source_faces: np.ndarray  # (T, 3) ICT vertex indices (normals, closedness)
    tiles: int  # UDIM tiles side by side in the texture


def split_part(ict: ICTModel, spec: PartSpec) -> SplitPart | None:
    wanted = [ict.material_names.index(name) for name in spec.materials if name in ict.material_names]
    rows = np.isin(ict.triangle_material, wanted)
    if not rows.any():
        return None
    pairs = np.stack([ict.triangles[rows].ravel(), ict.triangle_uv[rows].ravel()], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    uv = ict.uv[unique[:, 1]].astype(np.float64)
    first = math.floor(uv[:, 0].min() + 1e-6)
    tiles = max(1, math.ceil(uv[:, 0].max() - 1e-6) - first)
    uv[:, 0] = (uv[:, 0] - first) / tiles
    return SplitPart(spec, unique[:, 0].astype(np.int64), np.clip(uv, 0.0, 1.0).astype(np.float32),
                     inverse.reshape(-1, 3).astype(np.int64), ict.triangles[rows].astype(np.int64), tiles)


@dataclass(frozen=True, eq=False)
class FullHead:
    """A fitted full head: the exportable mesh and the numbers result.json keeps."""

    mesh: MorphedMesh
    fit: FullHeadFit
    info: dict


def bfm_keypoints(bfm: BFMData) -> np.ndarray:
    """The 68 landmark vertices of the whole BFM head (the front model's, mapped, where the head has none)."""
    if bfm.full.keypoints is not None:
        return bfm.full.keypoints
    if bfm.front is not None and bfm.front.keypoints is not None and bfm.front_idx is not None:
        return bfm.front_idx[bfm.front.keypoints]
    raise ValueError("the BFM files mark no 68 landmark vertices (keypoints)")


class FullHeadModel:
    """The ICT model, its correspondence with one BFM model and the fit's factored equations."""

    def __init__(self, ict: ICTModel, correspondence: Correspondence, bfm_uv: np.ndarray, keypoints: np.ndarray):
        self.ict = ict
        self.correspondence = correspondence
        self.system = FitSystem.build(ict, correspondence)
        self.keypoints = keypoints
        self.bfm_uv_of_vertex = correspondence.on_bfm(np.asarray(bfm_uv, np.float64)).astype(np.float32)
        self.parts = tuple(part for spec in PARTS if (part := split_part(ict, spec)) is not None)
        self._bakes: dict[tuple[str, int], paint.UVBake] = {}
        self._lock = threading.Lock()
        face = np.intersect1d(ict.material_vertices("M_Face"), np.flatnonzero(correspondence.texture_weight >= 1.0))
        self.tone_vertices = face

    @classmethod
    def load(cls, folder: str | os.PathLike[str], bfm: BFMData, bfm_mean_shape: np.ndarray) -> FullHeadModel:
        """`bfm_mean_shape` (Nb, 3): the BFM head's mean shape as the pipeline uses it (centred, BFM units)."""
        folder = Path(folder)
        ict = load_ict_model(folder)
        keypoints = bfm_keypoints(bfm)
        key = correspondence_key(folder_key(folder), bfm_mean_shape, bfm.full_triangles, keypoints)
        correspondence = cached_correspondence(
            folder, key, lambda: build_correspondence(ict, bfm_mean_shape, bfm.full_triangles, keypoints))
        return cls(ict, correspondence, bfm.uv, keypoints)

    def bake(self, part: SplitPart, size: int) -> paint.UVBake:
        """The part's UV raster at `size` rows (skin: `size` x 2 `size`), computed once per size."""
        rows = size if part.spec.name == "skin" else EYE_TEXTURE_SIZE
        key = (part.spec.name, rows)
        with self._lock:
            if key not in self._bakes:
                self._bakes[key] = paint.UVBake.build(part.uv, part.faces, (rows, rows * part.tiles))
            return self._bakes[key]

    def make_head(self, bfm_identity_shape: np.ndarray, bfm_shape: np.ndarray | None, albedo: torch.Tensor,
                  texture_size: int, name: str = "head_full") -> FullHead:
        """The ICT head fitted to a BFM head (BFM units, canonical frame; `bfm_shape` None: neutral), painted
        from `albedo` (1, 3, S, S) in [0, 1] (BFM UV layout)."""
        fit = fit_full_head(self.ict, self.correspondence, self.system, bfm_identity_shape, self.keypoints,
                            bfm_shape)
        ict = self.ict
        identity = ict.neutral + np.einsum("k,knc->nc", fit.identity.astype(np.float32), ict.identity)
        placed = fit.place(identity.astype(np.float64)) * METRES_PER_BFM_UNIT
        expression = np.einsum("e,enc->nc", fit.expression, ict.expressions)
        posed = placed + fit.place_offsets(expression) * METRES_PER_BFM_UNIT
        tone = paint.skin_tone(albedo, self.bfm_uv_of_vertex[self.tone_vertices])
        materials, parts = [], []
        for part in self.parts:
            spec = part.spec
            normals = vertex_normals(posed, part.source_faces)[part.source]
            texture = None
            if spec.name == "skin":
                bake = self.bake(part, texture_size)
                colour = paint.skin_texture(bake, albedo, self.bfm_uv_of_vertex[part.source],
                                            self.correspondence.texture_weight[part.source], tone)
                texture = colour
            elif spec.name in EYES:
                sclera = next((p for p in self.parts if p.spec.name == f"sclera_{EYES[spec.name]}"), part)
                centre, axis = paint.eye_axis(posed[sclera.source])
                points = self.bake(part, texture_size).bake(posed[part.source])
                texture = paint.eye_colours(points, centre, axis)
            if texture is not None:
                texture = (np.clip(texture, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            materials.append(Material(f"{name}_{spec.name}", spec.base_color, texture, spec.roughness, spec.blend,
                                      double_sided=spec.blend))
            targets = fit.place_offsets(ict.expressions[:, part.source]) * METRES_PER_BFM_UNIT
            parts.append(MeshPart(len(materials) - 1, placed[part.source], normals, part.uv, part.faces, targets))
        mesh = MorphedMesh(name, tuple(parts), tuple(materials), ict.expression_names,
                           tuple(float(w) for w in fit.expression))
        info = {"vertices": int(sum(len(p.vertices) for p in parts)),
                "triangles": int(sum(len(p.faces) for p in parts)),
                "ict_vertices": int(ict.n_vertices), "shape_keys": len(ict.expression_names),
                "landmark_residual_mm": round(fit.landmark_residual * BFM_UNIT_CM * 10.0, 3),
                "surface_residual_mm": round(fit.surface_residual * BFM_UNIT_CM * 10.0, 3),
                "identity": np.round(fit.identity, 5).tolist(),
                "expression": {n: round(float(w), 4) for n, w in zip(ict.expression_names, fit.expression, strict=True)
                               if w > 1e-4}}
        return FullHead(mesh, fit, info)
