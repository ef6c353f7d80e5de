"""Where each ICT skin vertex lies on the BFM head, computed once per model folder.

The ICT neutral head is aligned to the BFM mean head by a similarity transform on the 68 landmark
vertices both models mark (iBUG order), then each ICT face, head and neck vertex is given its closest
point on the BFM surface (triangle + barycentric weights). A vertex counts as matched where that point
is near (`MATCH_DISTANCE_CM`), faces the same way and lies away from the open rim of the BFM shell
(behind the ears, the crown, the neck cut). Matched vertices take their texture from our albedo; the
weight falls from 1 to 0 over `BLEND_CM` of surface distance towards the unmatched ones (scalp, back of
the head, the mouth socket), which take the skin tone: no seam, and continuous across UV seams because
it is a function of the vertex, not of the texel. The fit uses the matched vertices of ICT's fitting set.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
from scipy.spatial import cKDTree

from uvidm_backend.fullhead.cache import cached_arrays
from uvidm_backend.fullhead.ict_files import ICTModel

log = logging.getLogger(__name__)

CACHE_FILE = "bfm_correspondence.npz"
CACHE_VERSION = 1
BFM_UNIT_CM = 10.0
MATCH_DISTANCE_CM = 1.5
MIN_NORMAL_AGREEMENT = 0.5  # cosine between the two surfaces' normals
RIM_RINGS = 2  # BFM triangles this many rings from the shell's open border do not count
BLEND_CM = 2.0
SKIN_MATERIALS = ("M_Face", "M_BackHead")


@dataclass(frozen=True, eq=False)
class Correspondence:
    """ICT vertex -> point on the BFM surface, for every ICT vertex (rows of non-skin vertices are unused)."""

    bfm_triangle: np.ndarray  # (N, 3) int64 BFM vertex indices of the closest triangle
    barycentric: np.ndarray  # (N, 3) float32 weights of those vertices
    texture_weight: np.ndarray  # (N,) float32 in [0, 1]: share of our albedo (0: skin tone)
    fit_vertices: np.ndarray  # (n,) int64 ICT vertices the fit pulls onto the BFM surface
    landmark_scale: float  # ICT cm -> BFM units of the mean heads' landmark alignment

    def on_bfm(self, bfm_values: np.ndarray, vertices: np.ndarray | None = None) -> np.ndarray:
        """Per-BFM-vertex values (Nb, C) read at the ICT vertices' corresponding points ((N or n), C)."""
        rows = slice(None) if vertices is None else vertices
        corners = bfm_values[self.bfm_triangle[rows]]  # (n, 3, C)
        return np.einsum("nk,nkc->nc", self.barycentric[rows], corners)


def similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama's least-squares similarity: target ~ scale * source @ R.T + t. Returns (scale, R, t)."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mu_s, mu_t = source.mean(0), target.mean(0)
    a, b = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(b.T @ a / len(a))
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[2] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = float((sigma * d).sum() / a.var(0).sum())
    return scale, rotation, mu_t - scale * rotation @ mu_s


def outward_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit face normals flipped, all together, to point away from the centroid on average."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    normals = np.cross(b - a, c - a)
    if np.sum(normals * ((a + b + c) / 3 - vertices.mean(0))) < 0:
        normals = -normals
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def vertex_normals(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, following the triangles' winding."""
    a, b, c = (vertices[triangles[:, k]] for k in range(3))
    face = np.cross(b - a, c - a)
    normals = np.zeros_like(vertices, dtype=np.float64)
    for k in range(3):
        np.add.at(normals, triangles[:, k], face)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def closest_points_on_triangles(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric weights (..., 3) of the closest point of triangle (a, b, c) to each point (Ericson, 5.1.5)."""
    ab, ac, ap = b - a, c - a, points - a
    d1, d2 = np.sum(ab * ap, -1), np.sum(ac * ap, -1)
    bp = points - b
    d3, d4 = np.sum(ab * bp, -1), np.sum(ac * bp, -1)
    cp = points - c
    d5, d6 = np.sum(ab * cp, -1), np.sum(ac * cp, -1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denominator = va + vb + vc
        v_in, w_in = vb / denominator, vc / denominator
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
    weights = np.stack([1 - v_in - w_in, v_in, w_in], -1)
    cases = [  # (condition, weights), later conditions win, as the tests are ordered in Ericson
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), np.stack([0 * t_bc, 1 - t_bc, t_bc], -1)),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), np.stack([1 - t_ac, 0 * t_ac, t_ac], -1)),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), np.stack([1 - t_ab, t_ab, 0 * t_ab], -1)),
        ((d6 >= 0) & (d5 <= d6), np.broadcast_to([0.0, 0.0, 1.0], weights.shape)),
        ((d3 >= 0) & (d4 <= d3), np.broadcast_to([0.0, 1.0, 0.0], weights.shape)),
        ((d1 <= 0) & (d2 <= 0), np.broadcast_to([1.0, 0.0, 0.0], weights.shape)),
    ]
    for condition, value in cases:
        weights = np.where(condition[..., None], value, weights)
    return np.nan_to_num(weights, nan=1.0 / 3.0)


def closest_surface_points(points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray,
                           neighbours: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each point, the closest point among the triangles around its nearest mesh vertices:
    (triangle index, barycentric weights, distance). Exact wherever the mesh is denser than the offsets."""
    order = np.argsort(triangles.ravel(), kind="stable")
    vertex_of = triangles.ravel()[order]
    counts = np.bincount(vertex_of, minlength=len(vertices))
    slot = np.arange(len(order)) - np.repeat(np.cumsum(counts) - counts, counts)
    incident = np.full((len(vertices), max(int(counts.max()), 1)), -1, np.int64)
    incident[vertex_of, slot] = order // 3
    _, nearest = cKDTree(vertices).query(points, k=min(neighbours, len(vertices)))
    candidates = incident[nearest.reshape(len(points), -1)].reshape(len(points), -1)
    valid = candidates >= 0
    candidates = np.where(valid, candidates, candidates.max(axis=1, keepdims=True))
    a, b, c = (vertices[triangles[candidates, k]] for k in range(3))
    weights = closest_points_on_triangles(points[:, None, :], a, b, c)
    closest = weights[..., :1] * a + weights[..., 1:2] * b + weights[..., 2:] * c
    distance = np.where(valid, np.linalg.norm(closest - points[:, None, :], axis=-1), np.inf)
    best = distance.argmin(axis=1)
    rows = np.arange(len(points))
    return candidates[rows, best], weights[rows, best], distance[rows, best]


def _rim_triangles(triangles: np.ndarray, n_vertices: int) -> np.ndarray:
    """Triangles within RIM_RINGS rings of the mesh's boundary edges."""
    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    near = np.zeros(n_vertices, bool)
    near[unique[counts == 1].ravel()] = True
    for _ in range(RIM_RINGS):
        near[triangles[near[triangles].any(axis=1)].ravel()] = True
    return near[triangles].any(axis=1)


def _surface_distance_to(unmatched: np.ndarray, vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Shortest distance along the mesh's edges from each vertex to the nearest `unmatched` vertex."""
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    lengths = np.linalg.norm(vertices[edges[:, 0]] - vertices[edges[:, 1]], axis=1)
    graph = scipy.sparse.coo_matrix((lengths, (edges[:, 0], edges[:, 1])), shape=(len(vertices),) * 2).tocsr()
    sources = np.flatnonzero(unmatched)
    if len(sources) == 0:
        return np.full(len(vertices), np.inf)
    return scipy.sparse.csgraph.dijkstra(graph, directed=False, indices=sources, min_only=True)


def build_correspondence(ict: ICTModel, bfm_vertices: np.ndarray, bfm_triangles: np.ndarray,
                         bfm_keypoints: np.ndarray) -> Correspondence:
    """The correspondence of the neutral ICT head and a BFM head (Nb, 3) in BFM units (seconds, once)."""
    scale, rotation, shift = similarity(ict.neutral[ict.landmarks], bfm_vertices[bfm_keypoints])
    aligned = (scale * ict.neutral.astype(np.float64) @ rotation.T + shift)
    skin = ict.material_vertices(*SKIN_MATERIALS)
    bfm_vertices = np.asarray(bfm_vertices, np.float64)
    triangle, barycentric, distance = closest_surface_points(aligned[skin], bfm_vertices, bfm_triangles)

    skin_triangles = ict.triangles[np.isin(ict.triangle_material,
                                           [ict.material_names.index(m) for m in SKIN_MATERIALS])]
    ict_normals = vertex_normals(aligned, skin_triangles)[skin]
    bfm_normals = outward_normals(bfm_vertices, bfm_triangles)[triangle]
    matched = ((distance * BFM_UNIT_CM < MATCH_DISTANCE_CM)
               & (np.sum(ict_normals * bfm_normals, axis=1) > MIN_NORMAL_AGREEMENT)
               & ~_rim_triangles(bfm_triangles, len(bfm_vertices))[triangle])

    n = ict.n_vertices
    bfm_triangle = np.zeros((n, 3), np.int64)
    weights = np.zeros((n, 3), np.float32)
    bfm_triangle[skin] = bfm_triangles[triangle]
    weights[skin] = barycentric
    unmatched = np.ones(n, bool)
    unmatched[skin[matched]] = False
    distance_cm = _surface_distance_to(unmatched, ict.neutral.astype(np.float64), skin_triangles)
    t = np.clip(distance_cm / BLEND_CM, 0.0, 1.0)
    texture_weight = (t * t * (3 - 2 * t)).astype(np.float32)
    fit_vertices = np.intersect1d(ict.fitting_vertices, skin[matched])
    if len(fit_vertices) < 3 * len(ict.landmarks):
        fit_vertices = np.intersect1d(ict.material_vertices("M_Face"), skin[matched])
    log.info("ICT<->BFM correspondence: %d of %d skin vertices matched, %d fitted", matched.sum(), len(skin),
             len(fit_vertices))
    return Correspondence(bfm_triangle, weights, texture_weight, fit_vertices.astype(np.int64), scale)


def correspondence_key(ict_key: str, bfm_vertices: np.ndarray, bfm_triangles: np.ndarray,
                       bfm_keypoints: np.ndarray) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}:{ict_key}".encode())
    for array in (bfm_vertices.astype(np.float32), bfm_triangles.astype(np.int64), bfm_keypoints.astype(np.int64)):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def cached_correspondence(cache_dir: str | os.PathLike[str], key: str, build) -> Correspondence:
    """The correspondence from `cache_dir/bfm_correspondence.npz` when made for `key`, else `build()` saved there."""
    def built() -> dict[str, np.ndarray]:
        correspondence = build()
        return {f.name: np.asarray(getattr(correspondence, f.name)) for f in fields(Correspondence)}

    arrays = cached_arrays(Path(cache_dir) / CACHE_FILE, key, built)
    return Correspondence(**{f.name: (float(arrays[f.name]) if f.name == "landmark_scale" else arrays[f.name])
                             for f in fields(Correspondence)})
