"""Reading the ICT FaceKit model files (`FaceXModel/` of ICT-VGL/ICT-FaceKit) into numpy arrays.

Files, all in one folder:

- `generic_neutral_mesh.obj` — the topology: `v` positions (centimetres, +Y up, face towards +Z),
  `vt` UVs (v up), `usemtl` groups (one material per part: M_Face, M_BackHead, M_GumsTongue, ...),
  `f v/vt ...` polygons (quads and triangles, 1-based, counter-clockwise from outside).
- `identity000.obj` ... — identity shapes, the same topology; a mode is `shape - neutral`, for
  coefficients of unit variance.
- `<name>.obj` for each name of `vertex_indices.json["expressions"]` — the ARKit-named expression
  shapes (`eyeBlink_L`, `jawOpen`, ...), deltas taken the same way.
- `vertex_indices.json` — `expressions`, `idx_to_landmark_verts` (68 iBUG landmark vertices, 0-based),
  `idx_to_fitting_verts`, `idx_to_rigid_verts` (0-based vertex sets).

Parts are recognised by their material, not by vertex ranges, so a smaller model in the same layout
(the synthetic fixture of `devtools.ict_fixture`) reads the same way. `load_ict_model` converts once
into `ict_model.npz` beside the files (keyed by the files' sizes and times) and reads that afterwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uvidm_backend.errors import UVIDMError

log = logging.getLogger(__name__)

NEUTRAL_FILE = "generic_neutral_mesh.obj"
INDICES_FILE = "vertex_indices.json"
CACHE_FILE = "ict_model.npz"
IDENTITY_PATTERN = re.compile(r"^identity(\d{3})\.obj$")
CENTIMETRE = 0.01
CACHE_VERSION = 1


class ICTFileError(UVIDMError, RuntimeError):
    """An ICT FaceKit file that is missing or malformed; the message names the file and the remedy."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        super().__init__(f"{path}: {problem}. Run `uvidm weights download --full-head` (or --full-head-from DIR).")


@dataclass(frozen=True, eq=False)
class ICTModel:
    """The ICT FaceKit head: N vertices, T triangles (polygons split into fans), M UV points.

    Positions and modes are in centimetres as stored. `triangle_uv` indexes `uv` per corner (a vertex
    can have several UVs across seams); `triangle_material` indexes `material_names`.
    """

    neutral: np.ndarray  # (N, 3) float32
    triangles: np.ndarray  # (T, 3) int32 vertex indices
    triangle_uv: np.ndarray  # (T, 3) int32 indices into uv
    triangle_material: np.ndarray  # (T,) int16
    uv: np.ndarray  # (M, 2) float32, v up
    material_names: tuple[str, ...]
    identity: np.ndarray  # (K, N, 3) float32 deltas for unit coefficients
    expressions: np.ndarray  # (E, N, 3) float32 deltas
    expression_names: tuple[str, ...]
    landmarks: np.ndarray  # (68,) int32
    fitting_vertices: np.ndarray  # int32
    rigid_vertices: np.ndarray  # int32

    @property
    def n_vertices(self) -> int:
        return len(self.neutral)

    def material_vertices(self, *names: str) -> np.ndarray:
        """Sorted vertices of the triangles of the named materials."""
        wanted = [self.material_names.index(name) for name in names if name in self.material_names]
        return np.unique(self.triangles[np.isin(self.triangle_material, wanted)])


@dataclass(frozen=True)
class _Topology:
    vertices: np.ndarray
    uv: np.ndarray
    triangles: np.ndarray
    triangle_uv: np.ndarray
    triangle_material: np.ndarray
    material_names: tuple[str, ...]


def _lines(path: Path, keyword: bytes) -> list[bytes]:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ICTFileError(path, f"cannot be read ({error.strerror or error})") from error
    return [line for line in data.splitlines() if line.startswith(keyword)]


def _floats(lines: list[bytes], width: int, path: Path) -> np.ndarray:
    try:
        values = np.array(b" ".join(line[2:].strip() for line in lines).split(), dtype=np.float64)
        return values.reshape(len(lines), width).astype(np.float32)
    except ValueError as error:
        raise ICTFileError(path, f"has malformed lines ({error})") from error


def read_positions(path: Path) -> np.ndarray:
    """(N, 3) float32: the `v` lines of an OBJ file."""
    lines = _lines(path, b"v ")
    if not lines:
        raise ICTFileError(path, "has no vertices")
    return _floats(lines, 3, path)


def read_topology(path: Path) -> _Topology:
    """Positions, UVs and the polygons of the neutral mesh, triangulated as fans."""
    try:
        text = path.read_bytes()
    except OSError as error:
        raise ICTFileError(path, f"cannot be read ({error.strerror or error})") from error
    v_lines, vt_lines, corners, counts, materials = [], [], [], [], []
    material_names: list[str] = []
    current = -1
    for line in text.splitlines():
        if line.startswith(b"v "):
            v_lines.append(line)
        elif line.startswith(b"vt "):
            vt_lines.append(b"v " + line[3:])
        elif line.startswith(b"f "):
            tokens = line.split()[1:]
            corners.extend(tokens)
            counts.append(len(tokens))
            materials.append(current)
        elif line.startswith(b"usemtl "):
            name = line.split(None, 1)[1].strip().decode()
            if name not in material_names:
                material_names.append(name)
            current = material_names.index(name)
    if not v_lines or not counts:
        raise ICTFileError(path, "has no vertices or no faces")
    if min(materials) < 0:
        raise ICTFileError(path, "has faces before the first usemtl")
    vertices = _floats(v_lines, 3, path)
    uv = _floats(vt_lines, 2, path)[:, :2] if vt_lines else np.zeros((0, 2), np.float32)
    try:
        pairs = np.array([corner.split(b"/")[:2] for corner in corners], dtype=np.int64) - 1
    except ValueError as error:
        raise ICTFileError(path, "faces must be 'f v/vt ...' with UVs") from error
    counts_array = np.asarray(counts)
    if counts_array.min() < 3:
        raise ICTFileError(path, "has faces with fewer than three corners")
    starts = np.concatenate([[0], np.cumsum(counts_array)[:-1]])
    # A polygon of n corners gives n - 2 fan triangles (0, k, k + 1).
    polygon = np.repeat(np.arange(len(counts_array)), counts_array - 2)
    first = starts[polygon]
    k = np.arange(len(polygon)) - np.repeat(np.cumsum(counts_array - 2) - (counts_array - 2), counts_array - 2) + 1
    corner_index = np.stack([first, first + k, first + k + 1], axis=1)
    triangles = pairs[corner_index, 0]
    triangle_uv = pairs[corner_index, 1]
    if triangles.min() < 0 or triangles.max() >= len(vertices) or triangle_uv.min() < 0 or triangle_uv.max() >= len(uv):
        raise ICTFileError(path, "has face indices outside its vertex or UV lists")
    return _Topology(vertices, uv, triangles.astype(np.int32), triangle_uv.astype(np.int32),
                     np.asarray(materials, np.int16)[polygon], tuple(material_names))


def _read_indices(folder: Path) -> dict:
    path = folder / INDICES_FILE
    try:
        indices = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ICTFileError(path, f"cannot be read as JSON ({error})") from error
    for key in ("expressions", "idx_to_landmark_verts", "idx_to_fitting_verts", "idx_to_rigid_verts"):
        if key not in indices:
            raise ICTFileError(path, f"has no {key!r}")
    if len(indices["idx_to_landmark_verts"]) != 68:
        raise ICTFileError(path, "must list 68 landmark vertices")
    return indices


def model_file_names(folder: Path) -> list[str]:
    """The files the model is made of, in reading order (the neutral mesh, the indices, identities, expressions)."""
    indices = _read_indices(folder)
    identities = sorted(path.name for path in folder.iterdir() if IDENTITY_PATTERN.match(path.name))
    return [NEUTRAL_FILE, INDICES_FILE, *identities, *(f"{name}.obj" for name in indices["expressions"])]


def _deltas(folder: Path, names: list[str], neutral: np.ndarray) -> np.ndarray:
    out = np.empty((len(names), *neutral.shape), np.float32)
    for i, name in enumerate(names):
        positions = read_positions(folder / name)
        if positions.shape != neutral.shape:
            raise ICTFileError(folder / name, f"has {len(positions)} vertices, the neutral mesh {len(neutral)}")
        out[i] = positions - neutral
    return out


def convert_ict_folder(folder: Path) -> ICTModel:
    """Reads every OBJ of the model (seconds for the real one)."""
    indices = _read_indices(folder)
    topology = read_topology(folder / NEUTRAL_FILE)
    identities = sorted(path.name for path in folder.iterdir() if IDENTITY_PATTERN.match(path.name))
    if not identities:
        raise ICTFileError(folder / "identity000.obj", "is missing (no identity shapes)")
    names = tuple(indices["expressions"])
    neutral = topology.vertices
    model = ICTModel(
        neutral=neutral, triangles=topology.triangles, triangle_uv=topology.triangle_uv,
        triangle_material=topology.triangle_material, uv=topology.uv, material_names=topology.material_names,
        identity=_deltas(folder, identities, neutral),
        expressions=_deltas(folder, [f"{name}.obj" for name in names], neutral), expression_names=names,
        landmarks=np.asarray(indices["idx_to_landmark_verts"], np.int32),
        fitting_vertices=np.asarray(indices["idx_to_fitting_verts"], np.int32),
        rigid_vertices=np.asarray(indices["idx_to_rigid_verts"], np.int32))
    for what in ("landmarks", "fitting_vertices", "rigid_vertices"):
        values = getattr(model, what)
        if len(values) and (values.min() < 0 or values.max() >= len(neutral)):
            raise ICTFileError(folder / INDICES_FILE, f"{what} lie outside the {len(neutral)} vertices")
    return model


def folder_key(folder: Path) -> str:
    """Identifies the model files' versions cheaply: names, sizes and modification times."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for name in model_file_names(folder):
        stat = (folder / name).stat()
        digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


_ARRAYS = ("neutral", "triangles", "triangle_uv", "triangle_material", "uv", "identity", "expressions",
           "landmarks", "fitting_vertices", "rigid_vertices")


def save_cache(model: ICTModel, path: Path, key: str) -> None:
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(partial, key=np.array(key), material_names=np.array(model.material_names),
             expression_names=np.array(model.expression_names),
             **{name: getattr(model, name) for name in _ARRAYS})
    os.replace(partial, path)


def read_cache(path: Path, key: str | None = None) -> ICTModel | None:
    """The cached model, or None when absent or made from other files."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if key is not None and str(data["key"]) != key:
                return None
            arrays = {name: data[name] for name in _ARRAYS}
            return ICTModel(material_names=tuple(str(n) for n in data["material_names"]),
                            expression_names=tuple(str(n) for n in data["expression_names"]), **arrays)
    except (OSError, KeyError, ValueError):
        return None


def load_ict_model(folder: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> ICTModel:
    """The ICT model in `folder` (its `FaceXModel/` files), from the cache when it matches the files."""
    folder = Path(folder)
    if not (folder / NEUTRAL_FILE).is_file():
        raise ICTFileError(folder / NEUTRAL_FILE, "is missing")
    cache = Path(cache_dir or folder) / CACHE_FILE
    key = folder_key(folder)
    model = read_cache(cache, key)
    if model is None:
        log.info("converting the ICT FaceKit files in %s (once)", folder)
        model = convert_ict_folder(folder)
        save_cache(model, cache, key)
    return model
