"""Writes the synthetic BFM arrays of a reference archive as the official files, for the loader.

Archive names (reference README, case face_geometry): `bfm5w_<key>` -> `BFM_model_front_5w.mat`,
`bfmfront_<key>` -> `BFM_model_front.mat` (the suffix is the .mat key), `full_triangles` ->
`example1.mat`, `front_idx_1based` -> `BFM_front_idx.mat['idx']`, `bfm_uv` -> `BFM_UV.npy`,
`triangle_buffer` / `barycentric_weight` -> `.npy`. Arrays absent from the archive are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from uvidm_backend.devtools.synthetic_head import point_buffer  # noqa: F401  (re-exported for the tests)
from uvidm_backend.geometry import bfm_files

MODEL_PREFIXES = {"bfm5w_": bfm_files.FULL_MODEL_FILE, "bfmfront_": bfm_files.FRONT_MODEL_FILE}


def write_bfm_files(arrays: dict[str, np.ndarray], folder: Path, lm3d: np.ndarray | None = None) -> Path:
    """Returns `folder`. `lm3d` defaults to a stand-in: 68 vertices of the 5w mean shape."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, file_name in MODEL_PREFIXES.items():
        content = {name[len(prefix):]: value for name, value in arrays.items() if name.startswith(prefix)}
        if content:
            scipy.io.savemat(folder / file_name, content)
    if "full_triangles" in arrays:
        scipy.io.savemat(folder / bfm_files.FULL_TRIANGLES_FILE, {"full_triangles": arrays["full_triangles"]})
    if "front_idx_1based" in arrays:
        scipy.io.savemat(folder / bfm_files.FRONT_INDEX_FILE, {"idx": arrays["front_idx_1based"].reshape(-1, 1)})
    if "bfm_uv" in arrays:
        np.save(folder / bfm_files.UV_FILE, arrays["bfm_uv"])
    for name, file_name in (("triangle_buffer", bfm_files.TRIANGLE_BUFFER_FILE),
                            ("barycentric_weight", bfm_files.BARYCENTRIC_WEIGHT_FILE)):
        if name in arrays:
            np.save(folder / file_name, arrays[name])
    if lm3d is None and "bfm5w_meanshape" in arrays:
        lm3d = np.resize(arrays["bfm5w_meanshape"].reshape(-1, 3), (68, 3))
    if lm3d is not None:
        scipy.io.savemat(folder / bfm_files.LANDMARKS_FILE, {"lm": lm3d})
    return folder


def grid_mesh(nx: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    """A flat nx x ny vertex grid in the z = 0 plane: (N, 3) vertices, (F, 3) 0-based triangles
    (counter-clockwise seen from +z, so their normals point to +z)."""
    ys, xs = np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64), indexing="ij")
    vertices = np.stack([xs.ravel(), ys.ravel(), np.zeros(nx * ny)], axis=1)
    triangles = []
    for j in range(ny - 1):
        for i in range(nx - 1):
            a, b, c, d = j * nx + i, j * nx + i + 1, (j + 1) * nx + i, (j + 1) * nx + i + 1
            triangles += [(a, b, c), (b, d, c)]
    return vertices, np.array(triangles, dtype=np.int64)


def synthetic_arrays(nx: int = 6, ny: int = 5, size: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """A small BFM-like data set named like the reference archives (see the module docstring).

    Whole head: an nx x ny grid (point_buf 0-based, padded with F); front: the grid without its
    last column (tri and point_buf 1-based, padded with F + 1, as Deep3DFaceRecon stores them).
    """
    rng = np.random.default_rng(seed)
    vertices, triangles = grid_mesh(nx, ny)
    n = vertices.shape[0]
    arrays = {
        "bfm5w_meanshape": vertices.reshape(1, -1) * 0.1,
        "bfm5w_meantex": rng.uniform(50, 200, (1, 3 * n)),
        "bfm5w_idBase": rng.normal(0, 0.01, (3 * n, 80)),
        "bfm5w_exBase": rng.normal(0, 0.01, (3 * n, 64)),
        "bfm5w_texBase": rng.normal(0, 5, (3 * n, 80)),
        "bfm5w_tri": triangles + 1,
        "bfm5w_point_buf": point_buffer(triangles, n),
        "full_triangles": triangles,
        "bfm_uv": vertices[:, :2] / [nx - 1, ny - 1],
    }
    front = np.array([v for v in range(n) if v % nx != nx - 1])
    _, front_triangles = grid_mesh(nx - 1, ny)
    rows = (3 * front[:, None] + np.arange(3)).ravel()
    for key in ("meanshape", "meantex"):
        arrays["bfmfront_" + key] = arrays["bfm5w_" + key][:, rows]
    for key in ("idBase", "exBase", "texBase"):
        arrays["bfmfront_" + key] = arrays["bfm5w_" + key][rows]
    arrays["bfmfront_tri"] = front_triangles + 1
    arrays["bfmfront_point_buf"] = point_buffer(front_triangles, len(front)) + 1
    arrays["front_idx_1based"] = front + 1
    arrays["triangle_buffer"] = rng.integers(0, len(triangles), (size, size))
    weight = rng.uniform(0, 1, (size, size, 3))
    arrays["barycentric_weight"] = (weight / weight.sum(-1, keepdims=True)).astype(np.float32)
    return arrays
