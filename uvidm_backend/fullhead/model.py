"""The full head's model, prepared once per model folder, and the head it makes for one BFM fit.

`FullHeadModel.load(folder, bfm)` reads the ICT model (cached), the ICT<->BFM correspondence (cached
in the same folder) and factors the fit; `make_head(...)` fits, paints and returns a `MorphedMesh`:
skin (face, head, neck, mouth socket; our albedo + skin tone), eyes (sclera and iris per side), teeth,
gums and tongue, eyelashes (alpha-blended), each its own material, with the ICT expression shapes as
named morph targets. ICT's lacrimal fluid, eye-blend and eye-occlusion meshes are left out: they only
look right with Unreal's digital-human shaders.

Whatever does not depend on the person is made once per model, and kept on disk beside the correspondence
where it takes seconds: the skin texture's layout per texture size, the eye textures (painted on the neutral
ICT head fitted to the BFM mean head, so the iris sits on the cornea whatever the photo's expression) and
their PNGs, the morph targets' moving vertices, the sums that make vertex normals. A request fits, blends
the shapes, reads the albedo once on its device and rotates the morph targets.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

from uvidm_backend.fullhead import texture as paint
from uvidm_backend.fullhead.cache import cached_arrays
from uvidm_backend.fullhead.correspondence import (
    BFM_UNIT_CM,
    Correspondence,
    build_correspondence,
    cached_correspondence,
    correspondence_key,
)
from uvidm_backend.fullhead.fit import FitSystem, FullHeadFit, fit_full_head
from uvidm_backend.fullhead.ict_files import ICTModel, folder_key, load_ict_model
from uvidm_backend.geometry.bfm_files import BFMData
from uvidm_backend.pipeline.export import Material, MeshPart, MorphedMesh, MorphTargets
from uvidm_backend.pipeline.png import encode_png

log = logging.getLogger(__name__)

METRES_PER_BFM_UNIT = 0.1
EYE_TEXTURE_SIZE = 256
TEXTURE_CACHE_VERSION = 1  # of the skin layouts and eye textures kept on disk
SKIN_LAYOUT_PREFIX = "fullhead_skin_"  # + texture size + ".npz"
KEPT_SKIN_LAYOUTS = 4


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
    arrays = (unique[:, 0].astype(np.int64), np.clip(uv, 0.0, 1.0).astype(np.float32),
              inverse.reshape(-1, 3).astype(np.int64), ict.triangles[rows].astype(np.int64))
    for array in arrays:
        array.setflags(write=False)  # shared by every head's mesh (not copied, their OBJ text cached)
    return SplitPart(spec, *arrays, tiles)


def corner_sums(part: SplitPart) -> scipy.sparse.csr_matrix:
    """(M, T) sparse 0/1: split vertex i sums the part's triangles at its ICT vertex (area-weighted normals)."""
    corners = part.source_faces.ravel()
    triangles = np.repeat(np.arange(len(part.source_faces)), 3)
    n_vertices = int(max(corners.max(), part.source.max())) + 1
    incidence = scipy.sparse.csr_matrix((np.ones(len(corners)), (corners, triangles)),
                                        shape=(n_vertices, len(part.source_faces)))
    return incidence[part.source]


def part_normals(positions: np.ndarray, part: SplitPart, sums: scipy.sparse.csr_matrix) -> np.ndarray:
    """Unit vertex normals (M, 3) of the part's split vertices at ICT positions (N, 3), following the winding."""
    a, b, c = (positions[part.source_faces[:, k]] for k in range(3))
    normals = sums @ np.cross(b - a, c - a)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True, eq=False)
class FullHead:
    """A fitted full head: the exportable mesh and the numbers result.json keeps; `pngs`: textures already
    PNG-encoded, by material index (the eyes', the same for every head)."""

    mesh: MorphedMesh
    fit: FullHeadFit
    info: dict
    pngs: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class ShapedHead:
    """A full head's geometry fitted to a BFM head, before its texture (`FullHeadModel.shape_head`): the fit,
    the placed vertices (metres, the expression not applied) and posed ones, each part's normals (posed) and
    morph targets."""

    fit: FullHeadFit
    placed: np.ndarray
    posed: np.ndarray  # `placed` with the expression
    normals: tuple[np.ndarray, ...]
    targets: tuple[MorphTargets, ...]


def bfm_keypoints(bfm: BFMData) -> np.ndarray:
    """The 68 landmark vertices of the whole BFM head (the front model's, mapped, where the head has none)."""
    if bfm.full.keypoints is not None:
        return bfm.full.keypoints
    if bfm.front is not None and bfm.front.keypoints is not None and bfm.front_idx is not None:
        return bfm.front_idx[bfm.front.keypoints]
    raise ValueError("the BFM files mark no 68 landmark vertices (keypoints)")


class FullHeadModel:
    """The ICT model, its correspondence with one BFM model, the fit's solved equations and all else a head
    needs that does not depend on the person. `bfm_mean_shape` (Nb, 3): the head the eyes are painted on (fitted
    to it). `cache_dir`: where the skin layouts and eye textures are kept (None: in memory only), for `cache_key`
    (what they depend on besides the UVs and the mean shape)."""

    def __init__(self, ict: ICTModel, correspondence: Correspondence, bfm_uv: np.ndarray, keypoints: np.ndarray,
                 bfm_mean_shape: np.ndarray, cache_dir: str | os.PathLike[str] | None = None, cache_key: str = ""):
        self.ict = ict
        self.correspondence = correspondence
        self.system = FitSystem.build(ict, correspondence)
        self.keypoints = keypoints
        self.bfm_uv_of_vertex = correspondence.on_bfm(np.asarray(bfm_uv, np.float64)).astype(np.float32)
        self.parts = tuple(part for spec in PARTS if (part := split_part(ict, spec)) is not None)
        self.normal_sums = tuple(corner_sums(part) for part in self.parts)
        self.targets_cm = tuple(MorphTargets.from_dense(ict.expressions[:, part.source]) for part in self.parts)
        face = np.intersect1d(ict.material_vertices("M_Face"), np.flatnonzero(correspondence.texture_weight >= 1.0))
        self.tone_vertices = face
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        digest = hashlib.sha256(f"v{TEXTURE_CACHE_VERSION}:{cache_key}".encode())
        bfm_mean_shape = np.asarray(bfm_mean_shape, np.float64)
        for array in (bfm_mean_shape, self.bfm_uv_of_vertex, correspondence.texture_weight,
                      *(part.uv for part in self.parts)):
            digest.update(np.ascontiguousarray(array).tobytes())
        self.cache_key = digest.hexdigest()
        self._skin: dict[int, paint.SkinLayout] = {}
        self._skin_tensors: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()
        self.eye_textures = self._eye_textures(bfm_mean_shape)
        self.eye_pngs = {name: encode_png(texture) for name, texture in self.eye_textures.items()}

    @classmethod
    def load(cls, folder: str | os.PathLike[str], bfm: BFMData, bfm_mean_shape: np.ndarray) -> FullHeadModel:
        """`bfm_mean_shape` (Nb, 3): the BFM head's mean shape as the pipeline uses it (centred, BFM units)."""
        folder = Path(folder)
        return cls.from_ict(load_ict_model(folder), folder_key(folder), folder, bfm, bfm_mean_shape)

    @classmethod
    def from_ict(cls, ict: ICTModel, ict_key: str, cache_dir: str | os.PathLike[str], bfm: BFMData,
                 bfm_mean_shape: np.ndarray) -> FullHeadModel:
        """The model of a loaded ICT model (`ict_key`: what identifies its files), caches in `cache_dir`."""
        keypoints = bfm_keypoints(bfm)
        key = correspondence_key(ict_key, bfm_mean_shape, bfm.full_triangles, keypoints)
        correspondence = cached_correspondence(
            cache_dir, key, lambda: build_correspondence(ict, bfm_mean_shape, bfm.full_triangles, keypoints))
        return cls(ict, correspondence, bfm.uv, keypoints, bfm_mean_shape, cache_dir, key)

    def _cached(self, name: str, build) -> dict[str, np.ndarray]:
        if self.cache_dir is None:
            return build()
        return cached_arrays(self.cache_dir / name, self.cache_key, build)

    def _eye_textures(self, bfm_mean_shape: np.ndarray) -> dict[str, np.ndarray]:
        """Sclera and iris textures, by angle from each eye's axis, on the neutral ICT head fitted to the mean
        BFM head (its eyes look straight ahead, whatever a photo's expression)."""
        fit = fit_full_head(self.ict, self.correspondence, self.system, bfm_mean_shape, self.keypoints)
        identity = self.ict.neutral + np.einsum("k,knc->nc", fit.identity.astype(np.float32), self.ict.identity)
        neutral = fit.place(identity.astype(np.float64)) * METRES_PER_BFM_UNIT
        eyes = {part.spec.name: part for part in self.parts if part.spec.name in EYES}

        def paint_eyes() -> dict[str, np.ndarray]:
            textures = {}
            for name, part in eyes.items():
                sclera = eyes.get(f"sclera_{EYES[name]}", part)
                centre, axis = paint.eye_axis(neutral[sclera.source])
                bake = paint.UVBake.build(part.uv, part.faces, (EYE_TEXTURE_SIZE, EYE_TEXTURE_SIZE * part.tiles))
                colours = paint.eye_colours(bake.bake(neutral[part.source]), centre, axis)
                textures[name] = (np.clip(colours, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            return textures

        textures = self._cached("fullhead_eyes.npz", paint_eyes)
        for texture in textures.values():
            texture.setflags(write=False)
        return textures

    def skin_layout(self, size: int, device: torch.device | str | None = None) -> paint.SkinLayout:
        """What the skin texture of `size` rows (`size` x 2 `size`) reads, made once per size (rasterised on
        `device`) and kept on disk; the `KEPT_SKIN_LAYOUTS` sizes used last are kept, in memory and on disk."""
        skin = self.parts[0]
        with self._lock:
            layout = self._skin.pop(size, None)
            if layout is None:
                def build() -> dict[str, np.ndarray]:
                    bake = paint.UVBake.build(skin.uv, skin.faces, (size, size * skin.tiles), device)
                    layout = paint.SkinLayout.build(bake, self.bfm_uv_of_vertex[skin.source],
                                                    self.correspondence.texture_weight[skin.source])
                    return {"grid": layout.grid, "share": layout.share}

                layout = paint.SkinLayout(**self._cached(f"{SKIN_LAYOUT_PREFIX}{size}.npz", build))
                self._forget_old_layout_files(size)
            self._skin[size] = layout  # the dict's order: least recently used first
            for old in list(self._skin)[:-KEPT_SKIN_LAYOUTS]:
                del self._skin[old]
                self._skin_tensors = {key: value for key, value in self._skin_tensors.items() if key[0] != old}
            return layout

    def _forget_old_layout_files(self, used: int) -> None:
        """Marks `used`'s layout file as the latest and deletes all but the latest `KEPT_SKIN_LAYOUTS`: any size
        from 256 to 2048 can be asked for, and each costs 12 bytes a texel (25 MB at 1024)."""
        if self.cache_dir is None:
            return
        try:
            os.utime(self.cache_dir / f"{SKIN_LAYOUT_PREFIX}{used}.npz")
            files = sorted(self.cache_dir.glob(f"{SKIN_LAYOUT_PREFIX}*.npz"), key=lambda path: path.stat().st_mtime)
            for stale in files[:-KEPT_SKIN_LAYOUTS]:
                stale.unlink(missing_ok=True)
        except OSError as error:  # a read-only folder, or another process deleting the same file
            log.debug("skin layout files in %s left as they are (%s)", self.cache_dir, error)

    def skin_tensors(self, size: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The skin layout's arrays as tensors on `like`'s device and in its dtype, moved there once."""
        layout = self.skin_layout(size, like.device)  # also keeps the size among the recent ones
        key = (size, str(like.device), like.dtype)
        with self._lock:
            tensors = self._skin_tensors.get(key)
        if tensors is None:
            tensors = tuple(torch.from_numpy(array).to(like.device, like.dtype)
                            for array in (layout.grid, layout.share))
            with self._lock:
                self._skin_tensors[key] = tensors
        return tensors

    def make_head(self, bfm_identity_shape: np.ndarray, bfm_shape: np.ndarray | None, albedo: torch.Tensor,
                  texture_size: int, name: str = "head_full") -> FullHead:
        """The ICT head fitted to a BFM head (BFM units, canonical frame; `bfm_shape` None: neutral), painted
        from `albedo` (1, 3, S, S) in [0, 1] (BFM UV layout): `paint_head(shape_head(...))`."""
        return self.paint_head(self.shape_head(bfm_identity_shape, bfm_shape), albedo, texture_size, name)

    def shape_head(self, bfm_identity_shape: np.ndarray, bfm_shape: np.ndarray | None) -> ShapedHead:
        """The geometry of `make_head`: CPU work that needs only the BFM fit, so that a request can do it while
        the GPU samples the texture."""
        fit = fit_full_head(self.ict, self.correspondence, self.system, bfm_identity_shape, self.keypoints,
                            bfm_shape)
        ict = self.ict
        identity = ict.neutral + np.einsum("k,knc->nc", fit.identity.astype(np.float32), ict.identity)
        placed = fit.place(identity.astype(np.float64)) * METRES_PER_BFM_UNIT
        posed = placed
        if fit.expression.any():
            expression = np.einsum("e,enc->nc", fit.expression, ict.expressions)
            posed = placed + fit.place_offsets(expression) * METRES_PER_BFM_UNIT
        to_metres = fit.scale * METRES_PER_BFM_UNIT * fit.rotation.T  # ICT offsets (rows, cm) -> metres
        return ShapedHead(fit, placed, posed,
                          tuple(part_normals(posed, part, sums) for part, sums in zip(self.parts, self.normal_sums,
                                                                                      strict=True)),
                          tuple(targets.transformed(to_metres) for targets in self.targets_cm))

    def paint_head(self, shaped: ShapedHead, albedo: torch.Tensor, texture_size: int,
                   name: str = "head_full") -> FullHead:
        """The head of `shaped` with its materials, the skin painted from `albedo` (1, 3, S, S) in [0, 1]."""
        ict, fit = self.ict, shaped.fit
        tone = paint.skin_tone(albedo, self.bfm_uv_of_vertex[self.tone_vertices])
        materials, parts, pngs = [], [], {}
        for part, normals, targets in zip(self.parts, shaped.normals, shaped.targets, strict=True):
            spec = part.spec
            texture = None
            if spec.name == "skin":
                texture = paint.skin_texture(albedo, *self.skin_tensors(texture_size, albedo), tone)
            elif spec.name in EYES:
                texture = self.eye_textures[spec.name]
                pngs[len(materials)] = self.eye_pngs[spec.name]
            materials.append(Material(f"{name}_{spec.name}", spec.base_color, texture, spec.roughness, spec.blend,
                                      double_sided=spec.blend))
            parts.append(MeshPart(len(materials) - 1, shaped.placed[part.source], normals, part.uv, part.faces,
                                  targets, posed=shaped.posed[part.source] if fit.expression.any() else None))
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
        return FullHead(mesh, fit, info, pngs)
