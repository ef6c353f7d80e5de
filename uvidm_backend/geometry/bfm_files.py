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

- `front_mask.png` — optional: the official face-region mask of the UV map (`masktopo/front.png` of
  the UV-IDM code).

Index bases follow one rule (`INDEX_BASES`): every index array is read in the base the official
code reads it in, and only in that base; its values must fit it (smallest index = the base or more,
largest = the last vertex or face, plus the padding face for `point_buf`). A file that does not fit
raises `BFMFileError` naming the file and the array, and saying whether its values would fit the
other base (a file converted for other code) or neither. Every index array is returned 0-based
(names without suffix); the file's base is kept (`*_base`), so that `stored = array + base` gives
back what the official code read. Problems raise `BFMFileError` naming the file, what was expected
and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from uvidm_backend.errors import UVIDMError

FRONT_MODEL_FILE = "BFM_model_front.mat"
FULL_MODEL_FILE = "BFM_model_front_5w.mat"
FRONT_INDEX_FILE = "BFM_front_idx.mat"
UV_FILE = "BFM_UV.npy"
FULL_TRIANGLES_FILE = "example1.mat"
LANDMARKS_FILE = "similarity_Lm3D_all.mat"
TRIANGLE_BUFFER_FILE = "triangle_buffer.npy"
BARYCENTRIC_WEIGHT_FILE = "barycentric_weight.npy"
FRONT_MASK_FILE = "front_mask.png"

# The base in which the official code reads each index array: (file, array) -> base. `point_buf` differs
# between the two models (trap 2): visualize.py subtracts 1 for the front model, Deep3dEncoder uses the
# whole head's buffer as stored (with example1.mat's 0-based faces). `tri` is 1-based in both
# (`face_buf_part = tri - 1`), `idx` 1-based (`- 1` in visualize.py), the rest 0-based.
INDEX_BASES = {
    (FRONT_MODEL_FILE, "tri"): 1, (FRONT_MODEL_FILE, "point_buf"): 1, (FRONT_MODEL_FILE, "keypoints"): 1,
    (FULL_MODEL_FILE, "tri"): 1, (FULL_MODEL_FILE, "point_buf"): 0, (FULL_MODEL_FILE, "keypoints"): 1,
    (FULL_TRIANGLES_FILE, "full_triangles"): 0, (FRONT_INDEX_FILE, "idx"): 1,
    (TRIANGLE_BUFFER_FILE, "triangle_buffer"): 0,
}
# A model file under another name: the Deep3DFaceRecon layout, every index 1-based.
DEEP3D_BASE = 1

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
    front_mask: np.ndarray | None = None  # (H, W, 3) uint8: the official face-region mask (front_mask.png)


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


def index_base(path: Path, key: str) -> int:
    """The base in which the official code reads array `key` of the file at `path` (`INDEX_BASES`)."""
    return INDEX_BASES.get((path.name, key), DEEP3D_BASE)


def _in_base(raw: np.ndarray, base: int, count: int, path: Path, key: str, what: str,
             padding: bool = False) -> np.ndarray:
    """`raw - base`, once every index fits `base`: 0..count-1 after conversion, and `count` itself
    where `padding` (point_buf's dummy face). Anything else names the file and the array."""
    top = count + 1 if padding else count  # exclusive bound of the 0-based values
    indices = raw - base
    if indices.size == 0 or (indices.min() >= 0 and indices.max() < top):
        return indices
    other = 1 - base
    if raw.min() - other >= 0 and raw.max() - other < top:
        verdict = (f"they fit {other}-based indices, but the official code reads this array {base}-based "
                   f"(use the file of the official release)")
    else:
        verdict = "they fit neither 0- nor 1-based indices"
    raise BFMFileError(path, f"'{key}' indices span {raw.min()}..{raw.max()}, expected {base}-based {what} "
                             f"{base}..{top - 1 + base}: {verdict}")


# ---------------------------------------------------------------------------------------------
# one loader per file


def load_morphable_model(path: str | Path, *, point_buf_faces: int | None = None) -> MorphableModel:
    """Reads a Deep3DFaceRecon-format `BFM_model_front*.mat` (`ParametricFaceModel.__init__`).

    `point_buf_faces` is the number of faces that `point_buf` refers to (default: the file's
    own `tri`; the whole-head model's buffer refers to `example1.mat['full_triangles']`).
    Index bases by the module's rule (`index_base`).
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
    triangles_base = index_base(path, "tri")
    triangles = _in_base(tri, triangles_base, n_vertices, path, "tri", "vertex indices")

    raw_point_buf = _index_array(_get(content, "point_buf", path, layout), path, "point_buf")
    raw_point_buf = _matrix(raw_point_buf, path, "point_buf", n_vertices, None, "faces around each vertex")
    point_buf_base = index_base(path, "point_buf")
    faces = triangles.shape[0] if point_buf_faces is None else point_buf_faces
    point_buf = _in_base(raw_point_buf, point_buf_base, faces, path, "point_buf",
                         f"face indices (the last one the padding face) of {faces} faces", padding=True)

    keypoints = None
    if "keypoints" in content:
        raw = _vector(_index_array(np.asarray(content["keypoints"]), path, "keypoints"), path, "keypoints")
        keypoints = _in_base(raw, index_base(path, "keypoints"), n_vertices, path, "keypoints", "vertex indices")

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
    count = int(tri.max(initial=0)) + 1 if n_vertices is None else n_vertices
    return _in_base(tri, index_base(path, "full_triangles"), count, path, "full_triangles",
                    "vertex indices of the whole-head model")


def load_front_idx(path: str | Path, n_vertices: int | None = None, length: int | None = None) -> np.ndarray:
    """`BFM_front_idx.mat['idx']` (1-based in the file) as 0-based indices into the whole head."""
    path = Path(path)
    raw = _index_array(_get(read_mat(path), "idx", path, "key 'idx', 1-based vertex indices"), path, "idx")
    raw = _vector(raw, path, "idx", length)
    count = int(raw.max(initial=0)) if n_vertices is None else n_vertices
    return _in_base(raw, index_base(path, "idx"), count, path, "idx", "vertex indices into the whole-head model")


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
    count = int(buffer.max(initial=0)) + 1 if n_triangles is None else n_triangles
    buffer = _in_base(buffer, index_base(buffer_path, "triangle_buffer"), count, buffer_path, "triangle_buffer",
                      "face indices of full_triangles")
    return buffer, weight


def load_front_mask(path: str | Path) -> np.ndarray:
    """`front_mask.png` (the official `masktopo/front.png`) as an (H, W, 3) uint8 RGB array."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _require_file(path)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise BFMFileError(path, f"not a readable image ({error}); download it again") from error


# ---------------------------------------------------------------------------------------------
# the whole folder


def load_bfm(folder: str | Path, *, front_model: bool = True, landmarks: bool = True) -> BFMData:
    """Loads and cross-checks the BFM folder (`ParametricFaceModel`, `Deep3dEncoder`, visualize.py).

    `front_model=False` / `landmarks=False` skip `BFM_model_front.mat` (and make
    `BFM_front_idx.mat` optional) / `similarity_Lm3D_all.mat`, for callers that do not need them
    (the condition stage needs neither). The UV raster files are optional (both or neither), and so is
    `front_mask.png`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BFMFileError(folder, "BFM folder not found")
    full_triangles = load_full_triangles(folder / FULL_TRIANGLES_FILE)
    full = load_morphable_model(folder / FULL_MODEL_FILE, point_buf_faces=full_triangles.shape[0])
    # Read again against the model's vertex count: a small file, and the range check names it.
    full_triangles = load_full_triangles(folder / FULL_TRIANGLES_FILE, full.n_vertices)
    front = None
    if front_model:
        front = load_morphable_model(folder / FRONT_MODEL_FILE)
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
    front_mask = load_front_mask(folder / FRONT_MASK_FILE) if (folder / FRONT_MASK_FILE).is_file() else None
    return BFMData(full=full, full_triangles=full_triangles, uv=uv, front=front, front_idx=front_idx,
                   lm3d=lm3d, triangle_buffer=triangle_buffer, barycentric_weight=barycentric_weight,
                   front_mask=front_mask)
