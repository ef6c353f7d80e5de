"""Our UV lookup tables against the official-style tables of the reference set.

The reference archives hold ``triangle_buffer`` / ``barycentric_weight`` (the official
``BFM/*.npy`` files) for the ``bfm_uv`` layout of ``full_triangles``; the size S is read from the
arrays. Where the two rasterisations may legitimately differ (pixel centres on a triangle edge)
either answer is accepted; the weights are compared within the quantisation step of the official
tables, found from the data.
"""

from __future__ import annotations

import numpy as np
import pytest
import refdata
import torch

from uvidm_backend.geometry.uv_tables import uv_lookup_tables

pytestmark = pytest.mark.reference

TABLE_KEYS = ("bfm_uv", "full_triangles", "triangle_buffer", "barycentric_weight")
# A pixel centre closer than this to a triangle edge (in pixels) may go either way.
EDGE_TOLERANCE = 1e-3


def _tables(case: str) -> dict[str, np.ndarray]:
    arrays = refdata.case_arrays(case)
    missing = [key for key in TABLE_KEYS if key not in arrays]
    if missing:
        pytest.skip(f"{case} has no UV tables ({', '.join(missing)} missing)")
    return arrays


def _weight_tolerance(weights: np.ndarray) -> float:
    """The official weights' quantisation step (levels are its multiples), else float precision."""
    levels = np.unique(weights[weights > 0].astype(np.float64))
    step = float(np.diff(np.concatenate([[0.0], levels])).min())
    multiples = levels / step
    if np.abs(multiples - np.round(multiples)).max() < 1e-3:
        return step * (1 + 1e-4)  # a weight rounded to the grid is off by less than one step
    return 1e-5


def _edge_distance(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Distance (pixels) from points (M, 2) to the boundary of triangles (M, 3, 2)."""
    best = np.full(len(points), np.inf)
    for k in range(3):
        a, b = corners[:, k], corners[:, (k + 1) % 3]
        ab = b - a
        t = np.clip(((points - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-300), 0, 1)
        best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * ab), axis=1))
    return best


@pytest.mark.parametrize("case", ["face_geometry", "deep3d_encoder"])
def test_uv_lookup_tables_match_official_tables(case: str):
    arrays = _tables(case)
    ref_buffer, ref_weights = arrays["triangle_buffer"], arrays["barycentric_weight"]
    uv, triangles = arrays["bfm_uv"], arrays["full_triangles"]
    size = ref_buffer.shape[0]
    assert ref_buffer.shape == (size, size) and ref_weights.shape == (size, size, 3)

    buffer, weights = uv_lookup_tables(uv, triangles, size)
    assert buffer.shape == (size, size) and buffer.dtype == torch.int64
    assert weights.shape == (size, size, 3) and weights.dtype == torch.float32
    buffer, weights = buffer.numpy(), weights.numpy()

    # process_uv pixel coordinates of every vertex; texel (r, c) is the point (c, r).
    pixels = np.stack([uv[:, 0] * (size - 1), size - uv[:, 1] * (size - 1) - 1], 1)
    rows, cols = np.mgrid[:size, :size]
    centres = np.stack([cols, rows], -1).astype(np.float64)

    ref_covered = ref_weights.sum(-1) > 0
    covered = weights.sum(-1) > 0
    assert ref_covered.sum() > 0

    # Coverage: same except for centres on the edge of the triangle that covers them.
    only_ref = ref_covered & ~covered
    only_ours = covered & ~ref_covered
    for mask, table in ((only_ref, ref_buffer), (only_ours, buffer)):
        if mask.any():
            distance = _edge_distance(centres[mask], pixels[triangles[table[mask]]])
            assert distance.max() <= EDGE_TOLERANCE, f"{int(mask.sum())} coverage differences off the edges"
    neither = ~ref_covered & ~covered
    assert (buffer[neither] == 0).all() and (weights[neither] == 0).all()

    # Triangle: the same where both cover, unless the centre is on the edge they share.
    both = ref_covered & covered
    other = both & (buffer != ref_buffer)
    if other.any():
        for table in (ref_buffer, buffer):
            distance = _edge_distance(centres[other], pixels[triangles[table[other]]])
            assert distance.max() <= EDGE_TOLERANCE, f"{int(other.sum())} triangle differences off the edges"
    same = both & (buffer == ref_buffer)
    assert same.sum() >= 0.99 * ref_covered.sum()

    # Weights: within the official quantisation step; ours are exact (they give back the centre).
    tolerance = _weight_tolerance(ref_weights)
    error = np.abs(weights[same].astype(np.float64) - ref_weights[same]).max()
    assert error <= tolerance, f"weight error {error:.3g} > {tolerance:.3g}"
    np.testing.assert_allclose(weights[covered].sum(-1), 1.0, atol=1e-5)
    position = (weights[covered][..., None] * pixels[triangles[buffer[covered]]]).sum(1)
    np.testing.assert_allclose(position, centres[covered], atol=1e-3)
