"""Reading the Basel Face Model files of the official release into numpy arrays.

Files (all in one folder, `BFM/` by default; see BFM/README.md for their origin):

- `BFM_model_front.mat` — the Deep3DFaceRecon face model (35,709 vertices in the real file):
  `meanshape` (1, 3N), `meantex` (1, 3N), `idBase` (3N, 80), `exBase` (3N, 64), `texBase` (3N, 80),
  `tri` (F, 3) 1-based, `point_buf` (N, 8) 1-based faces padded with F + 1, `keypoints` (68)
  1-based (plus training-only keys `tri_mask2`, `frontmask2_idx`, `skinmask`, ignored here).
- `BFM_model_front_5w.mat` — the same layout for the whole head (the output mesh of UV-IDM).
  The official `Deep3dEncoder` uses its `point_buf` *as stored*, together with
  `example1.mat['full_triangles']` (trap 2), i.e. as 0-based faces padded with F.
- `example1.mat` — `full_triangles` (F, 3), 0-based, the triangles of the whole head.
- `BFM_front_idx.mat` — `idx` (N_front,), 1-based: the front vertices within the whole head.
- `BFM_UV.npy` — (N, 2) UV coordinates of the whole head, in [0, 1], v pointing up.
- `similarity_Lm3D_all.mat` — `lm` (68, 3): 3D landmarks of the mean face (image alignment).
- `triangle_buffer.npy` (S, S) / `barycentric_weight.npy` (S, S, 3) — optional: the official
  UV-space rasterisation of `full_triangles` (S = 256).

Every index array is returned 0-based (names without suffix); the base found in the file is
kept (`*_base`), so that `stored = array + base` gives back what the official code read.
Problems raise `BFMFileError` naming the file, what was expected and what to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from uvidm_backend.errors import UVIDMError

log = logging.getLogger(__name__)

FRONT_MODEL_FILE = "BFM_model_front.mat"
FULL_MODEL_FILE = "BFM_model_front_5w.mat"
FRONT_INDEX_FILE = "BFM_front_idx.mat"
UV_FILE = "BFM_UV.npy"
FULL_TRIANGLES_FILE = "example1.mat"
LANDMARKS_FILE = "similarity_Lm3D_all.mat"
TRIANGLE_BUFFER_FILE = "triangle_buffer.npy"
BARYCENTRIC_WEIGHT_FILE = "barycentric_weight.npy"

# The index base each official code path assumes for `point_buf` (trap 2): visualize.py
# subtracts 1 for the front model, Deep3dEncoder uses the whole-head buffer as stored.
OFFICIAL_POINT_BUF_BASE = {FRONT_MODEL_FILE: 1, FULL_MODEL_FILE: 0}

_HINT = "See BFM/README.md for where the Basel Face Model files come from and where to put them."


class ModelFileError(UVIDMError, RuntimeError):
    """A model file that is missing or unusable; the message names the file and the remedy."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}. {_HINT}")


class BFMFileError(ModelFileError):
    """A Basel Face Model file (or a file derived from it) that is missing or malformed."""


@dataclass(frozen=True)
class MorphableModel:
    """One `BFM_model_front*.mat`: the linear shape/texture model (bases as stored, float)."""

    path: Path
    mean_shape: np.ndarray  # (3N,) [x0, y0, z0, x1, ...]
    mean_tex: np.ndarray  # (3N,) in 0..255
    id_base: np.ndarray  # (3N, K_id), row 3v + k
    exp_base: np.ndarray  # (3N, K_exp)
    tex_base: np.ndarray  # (3N, K_tex)
    triangles: np.ndarray  # (F, 3) int64, 0-based vertex indices ('tri' - triangles_base)
    point_buf: np.ndarray  # (N, P) int64, 0-based face indices, padding = number of faces (a zero face)
    triangles_base: int  # index base of 'tri' in the file (1 in the Deep3DFaceRecon format)
    point_buf_base: int  # index base of 'point_buf' in the file
    keypoints: np.ndarray | None = None  # (68,) int64, 0-based landmark vertices, when the file has them

    @property
    def n_vertices(self) -> int:
        return self.mean_shape.shape[0] // 3


@dataclass(frozen=True)
class BFMData:
    """Everything the official inference reads from the BFM folder, with 0-based indices."""

    full: MorphableModel  # BFM_model_front_5w.mat: the whole head
    full_triangles: np.ndarray  # (F, 3) int64, 0-based (example1.mat), the faces `full.point_buf` refers to
    uv: np.ndarray  # (N, 2) UV coordinates of `full`'s vertices, as stored
    front: MorphableModel | None = None  # BFM_model_front.mat (baseline shading of visualize.py)
    front_idx: np.ndarray | None = None  # (N_front,) int64, 0-based indices of `front`'s vertices in `full`
    lm3d: np.ndarray | None = None  # (68, 3) mean-face landmarks (similarity_Lm3D_all.mat)
    triangle_buffer: np.ndarray | None = None  # (S, S) int64 face of full_triangles per UV pixel
    barycentric_weight: np.ndarray | None = None  # (S, S, 3) weights of that face's 3 vertices


# ---------------------------------------------------------------------------------------------
# low-level readers


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise BFMFileError(path, "file not found")


def read_mat(path: str | Path) -> dict[str, np.ndarray]:
    """`scipy.io.loadmat` with MATLAB's bookkeeping entries dropped and errors naming the file."""
    path = Path(path)
    _require_file(path)
    try:
        content = scipy.io.loadmat(str(path))
    except (ValueError, TypeError, OSError, NotImplementedError) as error:
        raise BFMFileError(path, f"not a readable MATLAB .mat file ({error}); download it again") from error
    return {key: value for key, value in content.items() if not key.startswith("__")}


def _get(content: dict[str, np.ndarray], key: str, path: Path, expected: str) -> np.ndarray:
    if key not in content:
        present = ", ".join(sorted(content)) or "none"
        raise BFMFileError(path, f"missing key '{key}' (expected {expected}; keys present: {present})")
    return np.asarray(content[key])


def _float_array(value: np.ndarray, path: Path, key: str) -> np.ndarray:
    if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.complexfloating):
        raise BFMFileError(path, f"'{key}' holds {value.dtype} values, expected real numbers")
    value = value.astype(np.float64) if not np.issubdtype(value.dtype, np.floating) else value
    if not np.all(np.isfinite(value)):
        raise BFMFileError(path, f"'{key}' contains NaN or infinite values")
    return value


def _index_array(value: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Integer-valued indices (MATLAB files often store them as double) as int64."""
    if not np.issubdtype(value.dtype, np.number) or np.issubdtype(value.dtype, np.complexfloating):
        raise BFMFileError(path, f"'{key}' holds {value.dtype} values, expected integer indices")
    if np.issubdtype(value.dtype, np.floating) and not np.all(value == np.round(value)):
        raise BFMFileError(path, f"'{key}' holds non-integer values, expected integer indices")
    return value.astype(np.int64)


def _vector(value: np.ndarray, path: Path, key: str, length: int | None = None) -> np.ndarray:
    """A (1, n) / (n, 1) / (n,) MATLAB vector as a flat array."""
    if value.ndim > 2 or (value.ndim == 2 and 1 not in value.shape):
        raise BFMFileError(path, f"'{key}' has shape {value.shape}, expected a vector")
    value = value.reshape(-1)
    if length is not None and value.shape[0] != length:
        raise BFMFileError(path, f"'{key}' has {value.shape[0]} entries, expected {length}")
    return value


def _matrix(value: np.ndarray, path: Path, key: str, rows: int | None, cols: int | None, what: str
            ) -> np.ndarray:
    if value.ndim != 2 or (rows is not None and value.shape[0] != rows) or (
            cols is not None and value.shape[1] != cols):
        want = f"({rows if rows is not None else 'n'}, {cols if cols is not None else 'k'})"
        raise BFMFileError(path, f"'{key}' has shape {value.shape}, expected {want} ({what})")
    return value


def _detect_base(indices: np.ndarray, declared: int | None) -> int:
    """0 if the smallest index is 0, else 1 (a 1-based list never holds 0)."""
    if declared is not None:
        return declared
    return 0 if indices.size and indices.min() == 0 else 1


# ---------------------------------------------------------------------------------------------
# one loader per file


def load_morphable_model(path: str | Path, *, point_buf_faces: int | None = None,
                         point_buf_base: int | None = None) -> MorphableModel:
    """Reads a Deep3DFaceRecon-format `BFM_model_front*.mat` (`ParametricFaceModel.__init__`).

    `point_buf_faces` is the number of faces that `point_buf` refers to (default: the file's
    own `tri`; the whole-head model's buffer refers to `example1.mat['full_triangles']`).
    `point_buf_base` forces the index base of `point_buf` (default: detected, 0 if it holds a 0).
    """
    path = Path(path)
    content = read_mat(path)
    layout = "the Deep3DFaceRecon face model layout: meanshape, meantex, idBase, exBase, texBase, tri, point_buf"
    mean_shape = _vector(_float_array(_get(content, "meanshape", path, layout), path, "meanshape"),
                         path, "meanshape")
    if mean_shape.shape[0] % 3:
        raise BFMFileError(path, f"'meanshape' has {mean_shape.shape[0]} entries, expected 3 per vertex")
    rows = mean_shape.shape[0]
    n_vertices = rows // 3
    mean_tex = _vector(_float_array(_get(content, "meantex", path, layout), path, "meantex"), path, "meantex",
                       rows)
    bases = {}
    for key in ("idBase", "exBase", "texBase"):
        value = _float_array(_get(content, key, path, layout), path, key)
        bases[key] = _matrix(value, path, key, rows, None, f"3 rows per vertex of the {n_vertices}-vertex mean shape")

    tri = _matrix(_index_array(_get(content, "tri", path, layout), path, "tri"), path, "tri", None, 3,
                  "vertex indices of each triangle")
    triangles_base = _detect_base(tri, None)
    triangles = tri - triangles_base
    if triangles.min(initial=0) < 0 or triangles.max(initial=0) >= n_vertices:
        raise BFMFileError(path, f"'tri' indices span {tri.min()}..{tri.max()}, outside the "
                                 f"{n_vertices} vertices (base {triangles_base})")

    raw_point_buf = _index_array(_get(content, "point_buf", path, layout), path, "point_buf")
    raw_point_buf = _matrix(raw_point_buf, path, "point_buf", n_vertices, None, "faces around each vertex")
    point_buf_base = _detect_base(raw_point_buf, point_buf_base)
    point_buf = raw_point_buf - point_buf_base
    faces = triangles.shape[0] if point_buf_faces is None else point_buf_faces
    if point_buf.min(initial=0) < 0 or point_buf.max(initial=0) > faces:
        raise BFMFileError(path, f"'point_buf' indices span {raw_point_buf.min()}..{raw_point_buf.max()} "
                                 f"(base {point_buf_base}), expected faces 0..{faces - 1} plus the padding "
                                 f"value {faces}")

    keypoints = None
    if "keypoints" in content:
        raw = _vector(_index_array(np.asarray(content["keypoints"]), path, "keypoints"), path, "keypoints")
        keypoints = raw - 1  # Deep3DFaceRecon stores them 1-based
        if keypoints.min(initial=0) < 0 or keypoints.max(initial=0) >= n_vertices:
            raise BFMFileError(path, f"'keypoints' span {raw.min()}..{raw.max()}, expected 1..{n_vertices}")

    return MorphableModel(path=path, mean_shape=mean_shape, mean_tex=mean_tex, id_base=bases["idBase"],
                          exp_base=bases["exBase"], tex_base=bases["texBase"], triangles=triangles,
                          point_buf=point_buf, triangles_base=triangles_base, point_buf_base=point_buf_base,
                          keypoints=keypoints)


def load_full_triangles(path: str | Path, n_vertices: int | None = None) -> np.ndarray:
    """`example1.mat['full_triangles']`, 0-based as stored (the official code uses it as is)."""
    path = Path(path)
    tri = _index_array(_get(read_mat(path), "full_triangles", path, "key 'full_triangles' (F, 3), 0-based"),
                       path, "full_triangles")
    tri = _matrix(tri, path, "full_triangles", None, 3, "vertex indices of each triangle")
    if tri.min(initial=0) < 0 or (n_vertices is not None and tri.max(initial=0) >= n_vertices):
        raise BFMFileError(path, f"'full_triangles' indices span {tri.min()}..{tri.max()}, expected 0-based "
                                 f"indices below {n_vertices} (the whole-head model's vertex count)")
    return tri


def load_front_idx(path: str | Path, n_vertices: int | None = None, length: int | None = None) -> np.ndarray:
    """`BFM_front_idx.mat['idx']` (1-based in the file) as 0-based indices into the whole head."""
    path = Path(path)
    raw = _index_array(_get(read_mat(path), "idx", path, "key 'idx', 1-based vertex indices"), path, "idx")
    raw = _vector(raw, path, "idx", length)
    if raw.min(initial=1) < 1 or (n_vertices is not None and raw.max(initial=1) > n_vertices):
        raise BFMFileError(path, f"'idx' spans {raw.min()}..{raw.max()}, expected 1-based indices "
                                 f"1..{n_vertices} into the whole-head model")
    return raw - 1


def load_uv(path: str | Path, n_vertices: int | None = None) -> np.ndarray:
    """`BFM_UV.npy`: (N, 2) UV coordinates, returned as stored (dtype kept)."""
    path = Path(path)
    _require_file(path)
    try:
        uv = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise BFMFileError(path, f"not a readable .npy file ({error}); download it again") from error
    uv = _float_array(uv, path, "uv")
    return _matrix(uv, path, "uv", n_vertices, 2, "u, v of each whole-head vertex")


def load_lm3d(path: str | Path) -> np.ndarray:
    """`similarity_Lm3D_all.mat['lm']`: (68, 3) landmarks of the mean face."""
    path = Path(path)
    lm = _float_array(_get(read_mat(path), "lm", path, "key 'lm' (68, 3)"), path, "lm")
    return _matrix(lm, path, "lm", 68, 3, "the 68 landmarks of the mean face")


def load_uv_raster(triangle_buffer_path: str | Path, barycentric_weight_path: str | Path,
                   n_triangles: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`triangle_buffer.npy` (S, S) as int64 and `barycentric_weight.npy` (S, S, 3) (dtype kept)."""
    arrays = []
    for path in (Path(triangle_buffer_path), Path(barycentric_weight_path)):
        _require_file(path)
        try:
            arrays.append(np.load(path, allow_pickle=False))
        except (ValueError, OSError) as error:
            raise BFMFileError(path, f"not a readable .npy file ({error}); download it again") from error
    buffer_path, weight_path = Path(triangle_buffer_path), Path(barycentric_weight_path)
    buffer = _index_array(arrays[0], buffer_path, "triangle_buffer")
    weight = _float_array(arrays[1], weight_path, "barycentric_weight")
    if buffer.ndim != 2:
        raise BFMFileError(buffer_path, f"shape {buffer.shape}, expected (S, S)")
    if weight.shape != (*buffer.shape, 3):
        raise BFMFileError(weight_path, f"shape {weight.shape}, expected {(*buffer.shape, 3)} "
                                        f"(matching {buffer_path.name})")
    if buffer.min(initial=0) < 0 or (n_triangles is not None and buffer.max(initial=0) >= n_triangles):
        raise BFMFileError(buffer_path, f"face indices span {buffer.min()}..{buffer.max()}, expected "
                                        f"0..{n_triangles - 1} (faces of full_triangles)")
    return buffer, weight


# ---------------------------------------------------------------------------------------------
# the whole folder


def _check_official_base(model: MorphableModel) -> None:
    official = OFFICIAL_POINT_BUF_BASE.get(model.path.name)
    if official is not None and official != model.point_buf_base:
        log.warning("%s: point_buf is %d-based, the official code reads it as %d-based; using the base "
                    "found in the file (the official code would index the wrong faces)",
                    model.path, model.point_buf_base, official)


def load_bfm(folder: str | Path, *, front_model: bool = True, landmarks: bool = True) -> BFMData:
    """Loads and cross-checks the BFM folder (`ParametricFaceModel`, `Deep3dEncoder`, visualize.py).

    `front_model=False` / `landmarks=False` skip `BFM_model_front.mat` (and make
    `BFM_front_idx.mat` optional) / `similarity_Lm3D_all.mat`, for callers that do not need them
    (the condition stage needs neither). The UV raster files are optional (both or neither).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BFMFileError(folder, "BFM folder not found")
    full_triangles = load_full_triangles(folder / FULL_TRIANGLES_FILE)
    full = load_morphable_model(folder / FULL_MODEL_FILE, point_buf_faces=full_triangles.shape[0])
    _check_official_base(full)
    if full_triangles.max(initial=0) >= full.n_vertices:
        raise BFMFileError(folder / FULL_TRIANGLES_FILE,
                           f"'full_triangles' index {full_triangles.max()} is outside the {full.n_vertices} "
                           f"vertices of {FULL_MODEL_FILE}")
    front = None
    if front_model:
        front = load_morphable_model(folder / FRONT_MODEL_FILE)
        _check_official_base(front)
    front_idx = None
    if front is not None or (folder / FRONT_INDEX_FILE).is_file():
        front_idx = load_front_idx(folder / FRONT_INDEX_FILE, full.n_vertices,
                                   None if front is None else front.n_vertices)
    uv = load_uv(folder / UV_FILE, full.n_vertices)
    lm3d = load_lm3d(folder / LANDMARKS_FILE) if landmarks else None

    buffer_path, weight_path = folder / TRIANGLE_BUFFER_FILE, folder / BARYCENTRIC_WEIGHT_FILE
    triangle_buffer = barycentric_weight = None
    if buffer_path.is_file() or weight_path.is_file():
        triangle_buffer, barycentric_weight = load_uv_raster(buffer_path, weight_path, full_triangles.shape[0])
    return BFMData(full=full, full_triangles=full_triangles, uv=uv, front=front, front_idx=front_idx,
                   lm3d=lm3d, triangle_buffer=triangle_buffer, barycentric_weight=barycentric_weight)
